"""The conformance plugin end to end, as users run it: `pytest conformance/ --env ...` in a subprocess.

The prod environment is the fake Kubernetes API (tests/conformance/k8s_fake, built from k8s/) plus a real TLS
server on 127.0.0.1 standing in for the ingress; the dev usage errors need no stack.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.report import validate
from tests.conformance.k8s_fake import FakeCluster
from tests.conformance.targets.conftest import REPO, Cert, make_cert, tls_secret


def run_suite(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "conformance/", "-p", "no:cacheprovider", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)


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


@pytest.fixture
def prod(tmp_path: Path) -> Iterator[tuple[FakeCluster, Path]]:
    cluster = FakeCluster.from_k8s_dir(REPO / "k8s")
    kubeconfig = cluster.kubeconfig(tmp_path / "kubeconfig", cluster.start())
    yield cluster, kubeconfig
    cluster.stop()


def report_of(path: Path) -> dict[str, dict[str, object]]:
    document = json.loads(path.read_text())
    assert validate(document) == []
    return {c["id"]: c for c in document["checks"]}


def test_without_env_is_one_usage_error() -> None:
    proc = run_suite()
    assert proc.returncode == 4
    assert "choose the environment: --env dev" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_unreachable_cluster_is_one_usage_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kubeconfig = FakeCluster([]).kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{port}")
    proc = run_suite("--env", "prod", "--kubeconfig", str(kubeconfig))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "conformance --env prod: the Kubernetes API at" in proc.stderr and "does not answer" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and "FAILED" not in proc.stdout


def test_unknown_compose_project_is_one_usage_error() -> None:
    proc = run_suite("--env", "dev", "--compose-project", "sbconf-no-such-project")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "conformance --env dev:" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_marks_select_one_dimension(prod: tuple[FakeCluster, Path]) -> None:
    proc = run_suite("--env", "prod", "--kubeconfig", str(prod[1]), "-m", "tls", "--collect-only", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    collected = [line for line in proc.stdout.splitlines() if "::" in line]
    assert collected and all(line.startswith("conformance/test_tls.py::") for line in collected)


def test_tls_checks_pass_on_a_good_endpoint(prod: tuple[FakeCluster, Path], tmp_path: Path) -> None:
    cluster, kubeconfig = prod
    cert = make_cert()
    cluster.add(tls_secret(cert))
    server = TlsServer(cert, tmp_path)
    ca, _ = cert.write(tmp_path, "ca")
    try:
        proc = run_suite("--env", "prod", "--kubeconfig", str(kubeconfig), "-m", "tls", "--tls-endpoint",
                         f"127.0.0.1:{server.port}", "--tls-ca", str(ca), "--report-json", str(tmp_path / "r.json"))
    finally:
        server.close()
    assert proc.returncode == 0, proc.stdout[-3000:]
    checks = report_of(tmp_path / "r.json")
    assert {c["status"] for c in checks.values()} == {"passed"}
    assert checks["tls/protocol/TLSv1"]["observed"]["accepted"] is False  # type: ignore[index]
    assert checks["tls/protocol/TLSv1_3"]["observed"]["accepted"] is True  # type: ignore[index]


def test_tls_checks_fail_on_a_bad_endpoint(prod: tuple[FakeCluster, Path], tmp_path: Path) -> None:
    """TLS 1.0 accepted, a certificate for another host expiring in 5 days, a Secret whose key is not its cert's."""
    cluster, kubeconfig = prod
    cert = make_cert(hosts=("other.example",), days=5)
    cluster.add(tls_secret(cert, key_pem=make_cert().key_pem))
    server = TlsServer(cert, tmp_path, minimum=ssl.TLSVersion.TLSv1)
    ca, _ = make_cert().write(tmp_path, "unrelated-ca")
    try:
        proc = run_suite("--env", "prod", "--kubeconfig", str(kubeconfig), "-m", "tls", "--tls-endpoint",
                         f"127.0.0.1:{server.port}", "--tls-ca", str(ca), "--report-json", str(tmp_path / "r.json"))
    finally:
        server.close()
    assert proc.returncode == 1
    status = {k: c["status"] for k, c in report_of(tmp_path / "r.json").items()}
    assert status == {
        "tls/chain_verifies": "failed", "tls/san_covers_host": "failed", "tls/not_expiring": "failed",
        "tls/protocol/TLSv1": "failed", "tls/protocol/TLSv1_1": "failed",
        "tls/protocol/TLSv1_2": "passed", "tls/protocol/TLSv1_3": "passed",
        "tls/secret_type": "passed", "tls/secret_key_matches_certificate": "failed",
    }
    assert "TLSv1 is accepted" in proc.stdout and "does not cover somabrain.internal" in proc.stdout


def test_static_netpol_passes_for_k8s_and_reports_the_guide_policy(prod: tuple[FakeCluster, Path]) -> None:
    ok = run_suite("--env", "prod", "--kubeconfig", str(prod[1]), "-m", "netpol", "-k", "static or guide")
    assert ok.returncode == 0, ok.stdout[-3000:]
    guide = run_suite("--env", "prod", "--kubeconfig", str(prod[1]), "-m", "netpol", "-k", "static",
                      "--netpol-policy", "tests/deploy/fixtures/guide_networkpolicy.yaml")
    assert guide.returncode == 1
    assert "guide_networkpolicy.yaml blocks DNS for somabrain: 53/UDP" in guide.stdout
    assert "blocks the ingress controller" in guide.stdout


def test_prod_truth_table_expected_from_the_cluster_policies(prod: tuple[FakeCluster, Path], tmp_path: Path) -> None:
    """The fake's pods run probes on this host, where no cluster name resolves. An unresolved name proves nothing
    about a policy (only a timeout does), so every flow is inconclusive and fails, the ones the policies deny as
    much as the ones they allow, while the expected side still comes from the cluster's policies. (The live table,
    with real drops, is tests/cluster/test_tilt_live.py.)"""
    proc = run_suite("--env", "prod", "--kubeconfig", str(prod[1]), "-m", "netpol", "-k", "not static and not guide",
                     "--report-json", str(tmp_path / "r.json"))
    assert proc.returncode == 1
    checks = report_of(tmp_path / "r.json")
    allowed = checks["netpol/flow/somabrain->redis"]
    assert allowed["expected"]["allowed"] is True and allowed["status"] == "failed"  # type: ignore[index]
    denied = checks["netpol/flow/redis->postgres"]
    assert denied["expected"]["allowed"] is False and denied["status"] == "failed"  # type: ignore[index]
    assert "inconclusive" in str(denied["message"]) and "unresolved" in str(denied["message"])
    assert checks["netpol/flow/somabrain->kafka"]["status"] == "skipped"
    assert "NetworkPolicy truth table: prod" in proc.stdout
