"""`somabrain doctor --env prod` against the writable Kubernetes API fake, whose exec reaches this run's real Redis
and Postgres: a healthy cluster is exit 0; a workload with no ready pod, a missing TLS Secret and a stub predictor
each become a FAIL line naming the fault with the guide's kubectl command (exit 2)."""

from __future__ import annotations

import json

import pytest

from ops import doctor
from tests.ops.conftest import STUB_IMAGE, Cluster


def run(cluster: Cluster, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = doctor.main(["--env", "prod", *cluster.args(), *extra])
    return code, capsys.readouterr().out


def test_healthy_cluster(cluster: Cluster, capsys: pytest.CaptureFixture[str], tmp_path: object) -> None:
    code, out = run(cluster, capsys, "--tls-dir", str(tmp_path))
    assert code == 0, out
    for check in ("dns", "endpoints", "memory", "tls", "opa", "postgres", "redis", "predictor"):
        assert f"OK   {check}" in out, out
    assert "healthy: " in out


def test_unready_workload_and_missing_secret(cluster: Cluster, capsys: pytest.CaptureFixture[str],
                                             tmp_path: object) -> None:
    for pod in cluster.fake.find("Pod", "somabrain-prod"):
        if pod["metadata"]["labels"].get("app") == "sb-redis":
            pod["status"]["conditions"][0]["status"] = "False"
    cluster.fake.objects = [o for o in cluster.fake.objects if o["kind"] != "Endpoints"
                            and not (o["kind"] == "Secret" and o["metadata"]["name"] == "somabrain-tls")]
    cluster.fake._build_endpoints()
    code, out = run(cluster, capsys, "--tls-dir", str(tmp_path), "--format", "json")
    report = json.loads(out)
    assert code == 2 and report["state"] == "broken"
    fails = {(line["check"], line["message"].split(":")[0]): line
             for line in report["lines"] if line["status"] == "FAIL"}
    assert ("endpoints", "Service sb-redis has no ready endpoints") in fails
    assert fails[("endpoints", "Service sb-redis has no ready endpoints")]["next"].startswith(
        "kubectl get endpoints sb-redis -n somabrain-prod")
    tls = [line for line in report["lines"] if line["check"] == "tls"]
    assert tls[0]["status"] == "FAIL" and "somabrain-tls does not exist" in tls[0]["message"]
    assert "kubectl get secret somabrain-tls -n somabrain-prod -o yaml" in tls[0]["next"]


def test_stub_predictor_is_a_fail(cluster: Cluster, capsys: pytest.CaptureFixture[str], tmp_path: object) -> None:
    for pod in cluster.fake.find("Pod", "somabrain-prod"):
        if pod["metadata"]["labels"].get("app") == "somabrain":
            pod["spec"]["containers"][0]["image"] = STUB_IMAGE
    code, out = run(cluster, capsys, "--tls-dir", str(tmp_path))
    assert code == 2, out
    assert "FAIL predictor  the predictor is 'stub'" in out


def test_stopped_dependency_is_named(cluster: Cluster, capsys: pytest.CaptureFixture[str], tmp_path: object,
                                     redis_server: object) -> None:
    # Point sb-redis at a port nothing listens on: the cluster's Redis is "down".
    from tests.helpers.servers import free_port
    from tests.ops.kube_fake import network_exec

    routes = {"redis": free_port(), "postgres": 1, "somamemory": cluster.health.port, "opa": cluster.health.port}
    cluster.fake.exec_handler = network_exec(routes, cluster.health, lambda pod: "ready")
    code, out = run(cluster, capsys, "--tls-dir", str(tmp_path))
    assert code == 2, out
    assert "FAIL redis      sb-redis.somabrain-prod.svc.cluster.local:6379 from somabrain: refused" in out
    assert "kubectl logs deployment/sb-redis -n somabrain-prod --tail 50" in out
    assert "FAIL postgres" in out and "kubectl logs statefulset/postgres -n somabrain-prod" in out


def test_unreachable_cluster_is_exit_3(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert doctor.main(["--env", "prod", "--kubeconfig", "/nonexistent/kubeconfig"]) == 3
    with pytest.raises(SystemExit) as exc:
        doctor.main(["--env", "staging"])
    assert exc.value.code == 3
