"""`somabrain doctor --env prod` on the real local cluster (`make cluster-test`), run as the operator runs it.

- the running deployment is healthy: exit 0, every check OK;
- OPA stopped (Deployment sb-opa scaled to 0, the one change these tests make to somabrain-prod, undone in a
  finally): the doctor names it and exits 2;
- a broken stack in a scratch namespace (the real API with the stub predictor, a Redis pod that does not listen,
  a SomaMemory whose db-init initContainer fails, so it never starts, an OPA Service without pods, no Postgres,
  no TLS Secret): one FAIL line per fault, each with the guide's kubectl command for that namespace.

(An unreachable cluster, exit 3, needs no cluster: tests/ops/test_doctor_prod.py.)
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.cluster.live import CONTEXT, NAMESPACE, REPO, VENV_BIN, kubectl
from tests.cluster.scratch import IDLE, NEVER_READY, apply, deployment, rolled_out, service, somabrain_image, wait_for

pytestmark = pytest.mark.cluster

Healthy = subprocess.CompletedProcess[str]
CHECKS = ("dns", "endpoints", "bootstrap", "memory", "tls", "opa", "postgres", "redis", "predictor")


def db_init_that_fails() -> dict[str, Any]:
    """A db-init initContainer that fails as the real one does when Postgres refuses it: it exits non-zero, so
    the pod's container never starts."""
    return {"name": "db-init", "image": somabrain_image(), "imagePullPolicy": "IfNotPresent",
            "command": ["python3", "-c", "raise SystemExit(3)"]}


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "somabrain"), "doctor", "--env", "prod", "--kube-context", CONTEXT, *args],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def report(*args: str) -> dict[str, Any]:
    run = doctor("--format", "json", *args)
    assert run.returncode in (0, 1, 2), run.stdout[-3000:] + run.stderr[-2000:]
    document: dict[str, Any] = json.loads(run.stdout)
    assert document["exit"] == run.returncode
    return document


def lines(document: dict[str, Any], check: str, status: str = "FAIL") -> list[dict[str, Any]]:
    return [line for line in document["lines"] if line["check"] == check and line["status"] == status]


def test_the_healthy_deployment_is_exit_0(healthy: Healthy) -> None:
    run = doctor()
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    for check in CHECKS:
        assert f"OK   {check}" in run.stdout, run.stdout
    assert not [line for line in run.stdout.splitlines() if line.startswith(("FAIL", "WARN"))], run.stdout
    assert "healthy: " in run.stdout and " OK, 0 WARN, 0 FAIL in " in run.stdout and "(exit 0)" in run.stdout


def test_a_stopped_opa_is_named(healthy: Healthy) -> None:
    """sb-opa scaled to 0 until the doctor has named it (OPA is fail-closed: the API then turns unready too, and
    the doctor's view of OPA goes from "does not answer" to "cannot read the API's view": a FAIL either way)."""
    def opa_failed() -> dict[str, Any] | None:
        document = report()
        return document if lines(document, "opa") else None

    replicas = kubectl("get", "deployment", "sb-opa", "-o", "jsonpath={.spec.replicas}").stdout.strip() or "1"
    try:
        kubectl("scale", "deployment/sb-opa", "--replicas=0")
        kubectl("wait", "--for=delete", "pod", "-l", "app=sb-opa", "--timeout=120s", timeout=180)
        broken = wait_for("the doctor's OPA line a FAIL", opa_failed, timeout=120, every=2)
    finally:
        kubectl("scale", "deployment/sb-opa", f"--replicas={replicas}")
        kubectl("rollout", "status", "deployment/sb-opa", "--timeout=300s", timeout=330)
        kubectl("wait", "--for=condition=Ready", "pod", "-l", "app=somabrain", "--timeout=300s", timeout=330)
    assert broken["exit"] == 2 and broken["state"] == "broken", broken
    endpoints = {line["message"]: line for line in lines(broken, "endpoints")}
    fault = "Service sb-opa has no ready endpoints: no pod matches its selector"
    assert fault in endpoints, broken
    assert endpoints[fault]["next"].splitlines() == [f"kubectl get endpoints sb-opa -n {NAMESPACE}",
                                                     f"kubectl describe pods -n {NAMESPACE} -l app=sb-opa"]
    opa, = lines(broken, "opa")
    if opa["message"].startswith("OPA does not answer"):  # the API's own view, while it still serves
        assert "the policy is fail-closed: every request is denied" in opa["message"], opa
        assert f"kubectl rollout restart deployment/sb-opa -n {NAMESPACE}" in opa["next"]
    else:  # the API unready in its turn: the doctor's direct GET of OPA is what it has
        assert opa["message"].startswith("cannot read the API's view"), opa
        assert f"direct GET http://sb-opa.{NAMESPACE}.svc.cluster.local:8181/health" in opa["message"], opa
    assert f"kubectl logs deployment/sb-opa -n {NAMESPACE} --tail 50" in opa["next"]
    # and back: the same command is healthy again once OPA is
    wait_for("the doctor healthy again", lambda: doctor().returncode == 0, timeout=180, every=3)


def test_each_fault_of_a_broken_stack_is_named(scratch_namespace: str) -> None:
    ns = scratch_namespace
    api = deployment("somabrain", args=["api", "--bind", "0.0.0.0:9696"],
                     env={"SOMABRAIN_PREDICTOR_PROVIDER": "stub",
                          "SOMABRAIN_REDIS_URL": f"redis://sb-redis.{ns}.svc.cluster.local:6379/0"},
                     readiness={"tcpSocket": {"port": 9696}, "periodSeconds": 1})
    apply(ns, api, service("somabrain", 9696),
          deployment("sb-redis", container="redis", command=IDLE), service("sb-redis", 6379),
          deployment("somamemory", command=IDLE, readiness=NEVER_READY, init=[db_init_that_fails()]),
          service("somamemory", 9595),
          service("sb-opa", 8181))
    rolled_out(ns, "somabrain")
    rolled_out(ns, "sb-redis")

    def not_ready_memory() -> bool:
        subsets = json.loads(kubectl("get", "endpoints", "somamemory", "-o", "json", namespace=ns).stdout).get(
            "subsets") or []
        return any(s.get("notReadyAddresses") for s in subsets)

    def db_init_failed() -> bool:
        pods = json.loads(kubectl("get", "pods", "-l", "app=somamemory", "-o", "json", namespace=ns).stdout)["items"]
        for status in (s for p in pods for s in (p.get("status") or {}).get("initContainerStatuses") or []):
            ended = (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get("terminated")
            if ended and ended.get("exitCode") == 3:
                return True
        return False

    wait_for("SomaMemory's pod listed not ready", not_ready_memory)
    wait_for("SomaMemory's db-init to have failed", db_init_failed)
    broken = report("--namespace", ns)

    assert broken["exit"] == 2 and broken["state"] == "broken"
    endpoints = {line["message"]: line["next"] for line in lines(broken, "endpoints")}
    assert f"kubectl describe pods -n {ns} -l app=somamemory" in endpoints[
        "Service somamemory has no ready endpoints: 1 not-ready pod(s)"]
    assert "Service sb-opa has no ready endpoints: no pod matches its selector" in endpoints
    assert "Service postgres: no Endpoints object (Not Found)" in endpoints
    assert not any(message.startswith(("Service somabrain ", "Service sb-redis ")) for message in endpoints)

    bootstrap, = lines(broken, "bootstrap")
    pod = bootstrap["message"].split(" of pod ", 1)[1].split(" ", 1)[0]
    assert pod.startswith("somamemory-"), bootstrap
    assert bootstrap["message"].startswith(f"initContainer db-init of pod {pod} (somamemory): "), bootstrap
    assert "exited 3 (Error)" in bootstrap["message"], bootstrap
    assert bootstrap["next"].splitlines()[0].startswith(f"kubectl logs {pod} -c db-init -n {ns}"), bootstrap

    tls, = lines(broken, "tls")
    assert tls["message"] == f"Secret somabrain-tls does not exist in {ns}"
    assert tls["next"].splitlines()[0] == f"kubectl get secret somabrain-tls -n {ns} -o yaml"

    predictor, = lines(broken, "predictor")
    assert predictor["message"].startswith("the predictor is 'stub' (real=False)")
    assert f"kubectl rollout restart deployment/somabrain -n {ns}" in predictor["next"]

    redis, = lines(broken, "redis")
    assert redis["message"].startswith(f"sb-redis.{ns}.svc.cluster.local:6379 from somabrain: refused")
    assert f"kubectl logs deployment/sb-redis -n {ns} --tail 50" in redis["next"]
    postgres, = lines(broken, "postgres")
    assert postgres["message"].startswith(f"postgres.{ns}.svc.cluster.local:5432 from somabrain: unresolved")
    assert f"kubectl logs statefulset/postgres -n {ns} --tail 50" in postgres["next"]
    dns = [line["message"] for line in lines(broken, "dns")]
    assert any(m.startswith(f"postgres.{ns}.svc.cluster.local does not resolve from somabrain") for m in dns)
    assert not any(m.startswith(f"sb-redis.{ns}") for m in dns)  # its Service exists: it resolves
