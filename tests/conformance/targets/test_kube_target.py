"""KubeTarget through the real kubernetes client against the fake API (tests/conformance/k8s_fake: a fake,
because no cluster can run here). Exec probes go through the same websocket seam a cluster uses."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conformance.targets.base import HttpResult, Probe, ProbeError, ResolveResult, TargetUnreachable, TcpResult
from conformance.targets.kube import KubeTarget, pick_serving
from tests.conformance.k8s_fake import FakeCluster
from tests.conformance.targets.conftest import REPO


@pytest.fixture
def target(kubeconfig: Path) -> KubeTarget:
    return KubeTarget(kubeconfig=str(kubeconfig), context="fake")


@pytest.fixture
def local_http() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"ready": true}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_reachable_cluster_passes(target: KubeTarget) -> None:
    target.check_reachable()


def test_missing_namespace_is_a_clear_error(kubeconfig: Path) -> None:
    target = KubeTarget(kubeconfig=str(kubeconfig), namespace="nope")
    with pytest.raises(TargetUnreachable, match=r"namespace .nope. does not exist.*tilt up"):
        target.check_reachable()


def test_unanswering_api_is_a_clear_error(tmp_path: Path) -> None:
    cluster = FakeCluster([])
    config = cluster.kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(TargetUnreachable, match="does not answer"):
        KubeTarget(kubeconfig=str(config)).check_reachable()


def test_unknown_context_is_a_clear_error(kubeconfig: Path) -> None:
    with pytest.raises(TargetUnreachable, match="context 'missing'"):
        KubeTarget(kubeconfig=str(kubeconfig), context="missing").check_reachable()


def test_declared_reads_env_resources_probes_and_readiness(target: KubeTarget) -> None:
    spec = target.declared("somabrain")
    assert spec.env["SOMABRAIN_STRICT_REAL"] == "1"  # from ConfigMap somabrain-env (envFrom)
    assert spec.env["SOMABRAIN_DISABLE_AUTH"] == "0"
    assert spec.env["POSTGRES_PASSWORD"] == "<secret somabrain-postgres/POSTGRES_PASSWORD>"
    assert spec.memory_limit_bytes == 2 * 1024**3 and spec.cpu_limit == pytest.approx(1.2)
    assert {"readiness", "liveness", "startup"} <= set(spec.probes)
    assert spec.ready and len(spec.replicas) == 1


def test_unready_pods_make_the_workload_not_ready(tmp_path: Path, cert: object) -> None:
    cluster = FakeCluster.from_k8s_dir(REPO / "k8s", unready=["sb-redis"])
    try:
        target = KubeTarget(kubeconfig=str(cluster.kubeconfig(tmp_path / "kc", cluster.start())))
        assert not target.declared("redis").ready
        assert target.declared("somabrain").ready
        assert target.endpoints("sb-redis")["subsets"] == []
    finally:
        cluster.stop()


def test_reads_services_endpoints_policies_ingress_and_secrets(target: KubeTarget) -> None:
    assert {s["metadata"]["name"] for s in target.services()} >= {"somabrain", "somabrain-public", "sb-redis",
                                                                   "sb-opa", "postgres", "somamemory"}
    addresses = target.endpoints("somabrain")["subsets"][0]["addresses"]
    assert addresses and addresses[0]["ip"].startswith("10.244.")
    assert {p["metadata"]["name"] for p in target.network_policies()} >= {"default-deny-all", "allow-dns-egress"}
    assert target.ingresses()[0]["spec"]["tls"][0]["secretName"] == "somabrain-tls"
    secret = target.secret("somabrain-tls")
    assert secret is not None and secret["type"] == "kubernetes.io/tls"
    assert target.secret("absent") is None
    assert target.namespace_labels("somabrain-prod") == {"kubernetes.io/metadata.name": "somabrain-prod"}


def test_exec_probes_run_in_the_pod_through_the_websocket(target: KubeTarget, fake_cluster: FakeCluster,
                                                          local_http: int) -> None:
    port = closed_port()
    results = target.run_probes("somabrain", [
        Probe.resolve("localhost"),
        Probe.tcp("127.0.0.1", local_http),
        Probe.tcp("127.0.0.1", port, timeout=0.5, attempts=1),
        Probe.tcp("no-such-name.invalid", 80),
        Probe.http(f"http://127.0.0.1:{local_http}/health"),
    ])
    resolved, opened, refused, unresolved, answer = results
    assert isinstance(resolved, ResolveResult) and resolved.ok and "127.0.0.1" in resolved.addresses
    assert isinstance(opened, TcpResult) and opened.status == "connected"
    assert isinstance(refused, TcpResult) and refused.status == "refused"
    assert isinstance(unresolved, TcpResult) and unresolved.status == "unresolved"
    assert isinstance(answer, HttpResult) and answer.status == 200 and answer.json() == {"ready": True}
    pod, command = fake_cluster.exec_log[-1]
    assert pod.startswith("somabrain-") and command[:2] == ["python3", "-c"]


def test_exec_failure_is_a_probe_error(tmp_path: Path) -> None:
    def no_python(pod: object, command: list[str]) -> tuple[int, bytes, bytes]:
        return 127, b"", b'exec: "python3": executable file not found in $PATH'

    cluster = FakeCluster.from_k8s_dir(REPO / "k8s", exec_handler=no_python)
    try:
        target = KubeTarget(kubeconfig=str(cluster.kubeconfig(tmp_path / "kc", cluster.start())))
        with pytest.raises(ProbeError, match=r"exited 127.*python3"):
            target.run_probes("redis", [Probe.resolve("localhost")])
    finally:
        cluster.stop()


def test_workload_without_pods_is_a_probe_error(target: KubeTarget) -> None:
    with pytest.raises(ProbeError, match="no Ready pod"):
        target.run_probes("kafka", [Probe.resolve("localhost")])


def _pod(name: str, ready: bool = True, terminating: bool = False, containers: tuple[str, ...] = ("redis",),
         phase: str = "Running") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if terminating:
        meta["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    return {"metadata": meta, "spec": {"containers": [{"name": c} for c in containers]},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_probes_run_in_a_ready_pod_that_is_not_terminating() -> None:
    # A rollout: the old pod is Terminating (still Running), a new one not Ready yet, one Ready.
    pods = [_pod("old", terminating=True), _pod("new", ready=False), _pod("serving")]
    assert pick_serving(pods, "redis", "ns") == ("serving", "redis")


def test_the_workloads_container_is_chosen_by_name() -> None:
    assert pick_serving([_pod("p", containers=("istio-proxy", "redis"))], "redis", "ns") == ("p", "redis")
    assert pick_serving([_pod("p", containers=("sb-redis",))], "redis", "ns") == ("p", "sb-redis")
    with pytest.raises(ProbeError, match="none named 'redis'"):
        pick_serving([_pod("p", containers=("sidecar", "main"))], "redis", "ns")


def test_no_ready_pod_names_what_there_is() -> None:
    with pytest.raises(ProbeError, match=r"old \(Running, terminating, ready\), new \(Pending, not ready\)"):
        pick_serving([_pod("old", terminating=True), _pod("new", ready=False, phase="Pending")], "redis", "ns")
