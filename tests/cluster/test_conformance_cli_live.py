"""The conformance plugin end to end against the real local cluster (`make cluster-test`): `pytest conformance/
--env prod --kube-context somabrain-local ...` in a subprocess, as users run it, one dimension at a time.

- TLS on the ingress (127.0.0.1:9999, Traefik, the somabrain-tls Secret): every check passes, and `-m tls`
  selects the TLS checks only;
- TLS on a bad endpoint (a local server accepting TLS 1.0 with a certificate for another host, expiring in 5
  days) and a scratch namespace whose somabrain-tls Secret holds a key that is not its certificate's: each of
  those checks fails, the others pass;
- the static NetworkPolicy checks (the manifests, and the guide's policy that must be reported);
- the live NetworkPolicy truth table, whose expected side comes from the cluster's own policies.

The usage errors (no --env, an unreachable cluster) need no cluster: tests/conformance/live/test_plugin_cli.py. The
whole suite against the cluster is tests/cluster/test_tilt_live.py.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

from conformance.live.report import validate
from tests.cluster.live import CONTEXT, REPO, VENV_BIN, kubectl
from tests.cluster.scratch import apply
from tests.helpers.certs import Cert, make_cert, tls_secret

pytestmark = pytest.mark.cluster

Healthy = subprocess.CompletedProcess[str]


def run_suite(*args: str, namespace: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    where = ["--namespace", namespace] if namespace else []
    return subprocess.run([str(VENV_BIN / "pytest"), "conformance/", "--env", "prod", "--kube-context", CONTEXT,
                           *where, "-p", "no:cacheprovider", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)


def report_of(path: Path) -> dict[str, dict[str, Any]]:
    document = json.loads(path.read_text())
    assert validate(document) == []
    return {c["id"]: c for c in document["checks"]}


class TlsServer:
    """A TLS endpoint on 127.0.0.1 that completes handshakes (and nothing else)."""

    def __init__(self, cert: Cert, directory: Path, minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2) -> None:
        crt, key = cert.write(directory, "server")
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if minimum < ssl.TLSVersion.TLSv1_2:
            self.context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.context.minimum_version = minimum
        self.context.load_cert_chain(crt, key)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handshake, args=(conn,), daemon=True).start()

    def _handshake(self, conn: socket.socket) -> None:
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass

    def close(self) -> None:
        self.sock.close()


def test_tls_checks_pass_on_the_ingress_and_the_mark_selects_them_only(healthy: Healthy, tmp_path: Path) -> None:
    run = run_suite("-m", "tls", "--report-json", str(tmp_path / "r.json"), "-q")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    checks = report_of(tmp_path / "r.json")
    assert {c["dimension"] for c in checks.values()} == {"tls"}
    assert {c["status"] for c in checks.values()} == {"passed"}
    assert set(checks) == {"tls/chain_verifies", "tls/san_covers_host", "tls/not_expiring", "tls/protocol/TLSv1",
                           "tls/protocol/TLSv1_1", "tls/protocol/TLSv1_2", "tls/protocol/TLSv1_3",
                           "tls/secret_type", "tls/secret_key_matches_certificate"}
    assert checks["tls/protocol/TLSv1"]["observed"]["accepted"] is False
    assert checks["tls/protocol/TLSv1_3"]["observed"]["accepted"] is True


def test_tls_checks_fail_on_a_bad_endpoint_and_a_bad_secret(scratch_namespace: str, tmp_path: Path) -> None:
    """TLS 1.0 accepted, a certificate for another host expiring in 5 days, not signed by the CA given, and a
    Secret (in a scratch namespace, read from the cluster) whose key is not its certificate's."""
    cert = make_cert(hosts=("other.example",), days=5)
    secret = tls_secret(cert, key_pem=make_cert().key_pem)
    apply(scratch_namespace, secret)
    assert kubectl("get", "secret", "somabrain-tls", "-o", "jsonpath={.type}",
                   namespace=scratch_namespace).stdout == "kubernetes.io/tls"
    server = TlsServer(cert, tmp_path, minimum=ssl.TLSVersion.TLSv1)
    ca, _ = make_cert().write(tmp_path, "unrelated-ca")
    try:
        run = run_suite("-m", "tls", "--tls-endpoint", f"127.0.0.1:{server.port}", "--tls-ca", str(ca),
                        "--report-json", str(tmp_path / "r.json"), "-q", namespace=scratch_namespace)
    finally:
        server.close()
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-2000:]
    status = {k: c["status"] for k, c in report_of(tmp_path / "r.json").items()}
    assert status == {
        "tls/chain_verifies": "failed", "tls/san_covers_host": "failed", "tls/not_expiring": "failed",
        "tls/protocol/TLSv1": "failed", "tls/protocol/TLSv1_1": "failed",
        "tls/protocol/TLSv1_2": "passed", "tls/protocol/TLSv1_3": "passed",
        "tls/secret_type": "passed", "tls/secret_key_matches_certificate": "failed",
    }
    assert "TLSv1 is accepted" in run.stdout and "does not cover somabrain.internal" in run.stdout


def test_static_netpol_passes_for_k8s_and_reports_the_guide_policy(healthy: Healthy) -> None:
    ok = run_suite("-m", "netpol", "-k", "static or guide", "-q")
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-2000:]
    guide = run_suite("-m", "netpol", "-k", "static", "-q",
                      "--netpol-policy", "tests/deploy/fixtures/guide_networkpolicy.yaml")
    assert guide.returncode == 1, guide.stdout[-3000:] + guide.stderr[-2000:]
    assert "guide_networkpolicy.yaml blocks DNS for somabrain: 53/UDP" in guide.stdout
    assert "blocks the ingress controller" in guide.stdout


def test_prod_truth_table_expected_from_the_cluster_policies(healthy: Healthy, tmp_path: Path) -> None:
    """Every in-cluster flow probed from a pod of its source: what the cluster's NetworkPolicies admit connects,
    the rest is dropped; the expected side names the cluster's own policies. Kafka is outside the cluster in
    prod: no flow to it is collected."""
    run = run_suite("-m", "netpol", "-k", "not static and not guide", "--report-json", str(tmp_path / "r.json"),
                    "-q")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    checks = report_of(tmp_path / "r.json")
    assert {c["status"] for c in checks.values()} == {"passed"}
    allowed = checks["netpol/flow/somabrain->redis"]
    assert allowed["expected"]["allowed"] is True and "sb-redis-ingress" in allowed["expected"]["because"]
    denied = checks["netpol/flow/redis->postgres"]
    assert denied["expected"]["allowed"] is False and "postgres-ingress" in denied["expected"]["because"]
    assert not [k for k in checks if "kafka" in k or "prometheus" in k]
    flows = [k for k in checks if k.startswith("netpol/flow/")]
    assert len(flows) == 5 * 4  # somabrain, somamemory, redis, opa, postgres: each to the four others
    assert checks["netpol/truth_table"]["expected"] == {"wrong": 0}  # (the table is printed only when wrong)
