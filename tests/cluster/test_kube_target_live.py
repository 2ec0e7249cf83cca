"""KubeTarget (targets/kube.py) against the real local cluster (`make cluster-test`).

The reads and the probes of somabrain-prod, as the running deployment has them (compared with what kubectl says);
and what a deployment can do to the target, built in a scratch namespace from small Deployments of the
registry's own images (tests/cluster/scratch.py): a pod without python probed from the ephemeral `sb-probe`
container (and again once that container has exited), probes that cannot run, an unready workload, and a
rollout that leaves an old pod behind.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from typing import Any

import pytest

from conformance.expectations import TLS_SECRET
from conformance.inventory import CLUSTER_DOMAIN
from conformance.loaders.units import k8s_quantity
from targets import kube
from targets.base import HttpResult, Probe, ProbeError, ResolveResult, TargetUnreachable, TcpResult
from targets.kube import PROBE_CONTAINER, KubeTarget
from tests.cluster.live import CONTEXT, NAMESPACE, REPO, kubectl
from tests.cluster.scratch import (
    IDLE,
    NEVER_READY,
    SERVE_REV,
    apply,
    deployment,
    get,
    pods,
    prod_image,
    ready,
    rolled_out,
    service,
    somabrain_image,
    wait_for,
)

pytestmark = pytest.mark.cluster

Healthy = subprocess.CompletedProcess[str]


def target(namespace: str = NAMESPACE) -> KubeTarget:
    return KubeTarget(context=CONTEXT, namespace=namespace)


def serving(namespace: str, app: str) -> list[dict[str, Any]]:
    """The app's pods that are not terminating, as kubectl lists them."""
    return [p for p in pods(namespace, app) if not p["metadata"].get("deletionTimestamp")]


# --- somabrain-prod: reachability and reads -------------------------------------------------------------------
def test_the_deployment_is_reachable(healthy: Healthy) -> None:
    target().check_reachable()


def test_a_missing_namespace_is_a_clear_error(healthy: Healthy) -> None:
    with pytest.raises(TargetUnreachable, match=r"namespace 'sb-no-such-namespace' does not exist.*tilt up"):
        target("sb-no-such-namespace").check_reachable()


def test_an_unknown_context_is_a_clear_error() -> None:
    """The kubeconfig that holds somabrain-local, asked for a context it does not have."""
    with pytest.raises(TargetUnreachable, match=r"cannot load context 'sb-no-such-context'.*--kube-context"):
        KubeTarget(context="sb-no-such-context").check_reachable()


def test_declared_reads_env_resources_probes_and_readiness(healthy: Healthy) -> None:
    live = get(NAMESPACE, "deployment", "somabrain")
    container = live["spec"]["template"]["spec"]["containers"][0]
    config_map = get(NAMESPACE, "configmap", "somabrain-env")["data"]
    overrides = kubectl("get", "configmap", "somabrain-overrides", "-o", "jsonpath={.data}", check=False).stdout
    config_map.update(json.loads(overrides or "{}"))  # the optional ConfigMap after it, when there is one
    spec = target().declared("somabrain")

    literal = {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}
    assert spec.env == {**spec.env, **config_map, **literal}  # envFrom ConfigMap somabrain-env; `env` overrides it
    assert spec.env["SOMABRAIN_STRICT_REAL"] == "1" and spec.env["SOMABRAIN_DISABLE_AUTH"] == "0"
    assert spec.env["POSTGRES_PASSWORD"] == "<secret somabrain-postgres-app/POSTGRES_PASSWORD>"  # never its value
    limits = container["resources"]["limits"]
    assert spec.memory_limit_bytes == k8s_quantity(limits["memory"])
    assert spec.cpu_limit == pytest.approx(k8s_quantity(limits["cpu"]))
    assert set(spec.probes) == {"readiness", "liveness", "startup"}
    assert spec.probes["readiness"] == container["readinessProbe"]
    current = {p["metadata"]["name"] for p in serving(NAMESPACE, "somabrain")}
    assert spec.ready and set(spec.replicas) == current and all(spec.replicas.values())

    postgres = target().declared("postgres")
    assert postgres.detail.startswith("StatefulSet/postgres:") and postgres.replicas == {"postgres-0": True}
    assert "no Deployment/StatefulSet" in target().declared("kafka").detail  # outside the cluster, as the seed has it


def test_reads_services_endpoints_policies_ingress_and_secrets(healthy: Healthy) -> None:
    t = target()
    assert {s["metadata"]["name"] for s in t.services()} == {
        s["metadata"]["name"] for s in get(NAMESPACE, "services")["items"]}
    pod_ips = {p["status"]["podIP"] for p in serving(NAMESPACE, "somabrain")}
    assert {a["ip"] for s in t.endpoints("somabrain")["subsets"] for a in s["addresses"]} == pod_ips

    policies = t.network_policies()
    assert {p["metadata"]["name"] for p in policies} == {
        p["metadata"]["name"] for p in get(NAMESPACE, "networkpolicies")["items"]}
    assert {"default-deny-all", "allow-dns-egress"} <= {p["metadata"]["name"] for p in policies}
    # a list names its kind once: each item gets it back, as the manifests carry it (the evaluator keys on it)
    assert {(p["kind"], p["apiVersion"]) for p in policies} == {("NetworkPolicy", "networking.k8s.io/v1")}

    assert [i["spec"]["tls"][0]["secretName"] for i in t.ingresses()] == [TLS_SECRET]
    secret = t.secret(TLS_SECRET)
    assert secret is not None and secret["type"] == "kubernetes.io/tls"
    assert {"tls.crt", "tls.key"} <= set(secret["data"])
    assert t.secret("sb-no-such-secret") is None
    labels = get(None, "namespace", NAMESPACE)["metadata"]["labels"]
    assert t.namespace_labels(NAMESPACE) == labels and labels["kubernetes.io/metadata.name"] == NAMESPACE


# --- somabrain-prod: probes from inside the API pod -----------------------------------------------------------
def test_probes_run_inside_the_api_pod(healthy: Healthy) -> None:
    """Through the pod exec websocket, in the API's own container: the API itself answers on its 127.0.0.1, the
    Service names resolve to their ClusterIPs, and what the NetworkPolicies allow connects."""
    redis = f"sb-redis.{NAMESPACE}.{CLUSTER_DOMAIN}"
    resolved, opened, refused, unresolved, health = target().run_probes("somabrain", [
        Probe.resolve(redis),
        Probe.tcp(redis, 6379),
        Probe.tcp("127.0.0.1", 1, timeout=1.0, attempts=1),
        Probe.tcp("no-such-name.invalid", 80),
        Probe.http("http://127.0.0.1:9696/health"),
    ])
    cluster_ip = get(NAMESPACE, "service", "sb-redis")["spec"]["clusterIP"]
    assert isinstance(resolved, ResolveResult) and resolved.ok and cluster_ip in resolved.addresses
    assert isinstance(opened, TcpResult) and opened.status == "connected"
    assert isinstance(refused, TcpResult) and refused.status == "refused"
    assert isinstance(unresolved, TcpResult) and unresolved.status == "unresolved"
    assert isinstance(health, HttpResult) and health.status == 200 and health.json()["ready"] is True


# --- scratch namespaces -----------------------------------------------------------------------------------------
def test_a_pod_without_python_is_probed_from_the_ephemeral_container(scratch_namespace: str) -> None:
    """Redis's image has no python3: the probe runs in an ephemeral `sb-probe` container of the somabrain image
    added to the pod, which shares the pod's network (Redis answers on its 127.0.0.1). A second run reuses it."""
    apply(scratch_namespace, deployment("somabrain", command=IDLE),
          deployment("sb-redis", container="redis", image=prod_image("sb-redis")))
    rolled_out(scratch_namespace, "somabrain")
    rolled_out(scratch_namespace, "sb-redis")
    t = target(scratch_namespace)

    for _ in range(2):
        opened, = t.run_probes("redis", [Probe.tcp("127.0.0.1", 6379, timeout=2.0, attempts=1)])
        assert isinstance(opened, TcpResult) and opened.status == "connected", opened
        pod, = serving(scratch_namespace, "sb-redis")
        ephemeral = pod["spec"].get("ephemeralContainers") or []
        assert [(c["name"], c["image"]) for c in ephemeral] == [(PROBE_CONTAINER, somabrain_image())]
        status, = pod["status"]["ephemeralContainerStatuses"]
        assert "running" in status["state"]


PROBE_REDIS = """
import json, sys
from targets.base import Probe
from targets.kube import KubeTarget
result, = KubeTarget(context=sys.argv[1], namespace=sys.argv[2]).run_probes(
    "redis", [Probe.tcp("127.0.0.1", 6379, timeout=2.0, attempts=1)])
print(json.dumps(result.status))
"""


def test_a_probe_container_that_has_exited_is_replaced(scratch_namespace: str) -> None:
    """The pod's `sb-probe` has exited (as it does when the node's runtime restarts: seen on this cluster, exit
    137): the next probe adds a fresh ephemeral container beside it and runs there. The probe runs in a process
    of its own, ended after a bound, so that a probe that never returns fails this test instead of hanging it."""
    apply(scratch_namespace, deployment("somabrain", command=IDLE),
          deployment("sb-redis", container="redis", image=prod_image("sb-redis")))
    rolled_out(scratch_namespace, "somabrain")
    rolled_out(scratch_namespace, "sb-redis")

    def probe() -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([sys.executable, "-c", PROBE_REDIS, CONTEXT, scratch_namespace], cwd=REPO,
                                  capture_output=True, text=True, timeout=kube.EPHEMERAL_START_TIMEOUT + 60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run_probes did not return within {kube.EPHEMERAL_START_TIMEOUT + 60:.0f} s")

    first = probe()
    assert first.returncode == 0 and json.loads(first.stdout) == "connected", first.stderr[-2000:]
    pod, = serving(scratch_namespace, "sb-redis")
    # SIGINT is the one signal python (PID 1 of the container, idle in signal.pause()) has a handler for
    kubectl("exec", pod["metadata"]["name"], "-c", PROBE_CONTAINER, "--", "python3", "-c",
            "import os, signal; os.kill(1, signal.SIGINT)", namespace=scratch_namespace, check=False)
    wait_for(f"{PROBE_CONTAINER} exited", lambda: [
        s for p in serving(scratch_namespace, "sb-redis") for s in p["status"].get("ephemeralContainerStatuses") or []
        if s["name"] == PROBE_CONTAINER and "terminated" in s["state"]])

    second = probe()
    assert second.returncode == 0 and json.loads(second.stdout) == "connected", second.stderr[-2000:]
    pod, = serving(scratch_namespace, "sb-redis")
    assert sorted(c["name"] for c in pod["spec"]["ephemeralContainers"]) == [PROBE_CONTAINER, f"{PROBE_CONTAINER}-2"]


def test_probes_that_cannot_run_are_probe_errors(scratch_namespace: str) -> None:
    """Each a ProbeError naming the pod and the reason, never another exception: a workload with no pod, one
    whose pod never turns Ready, and one whose own container cannot start python (the probe exits 1)."""
    apply(scratch_namespace, deployment("somabrain", command=IDLE),
          deployment("somamemory", command=IDLE, replicas=0),
          deployment("sb-redis", container="redis", command=IDLE, readiness=NEVER_READY),
          deployment("sb-opa", container="opa", command=["sleep", "infinity"], env={"PYTHONHOME": "/nonexistent"}))
    for name in ("somabrain", "somamemory", "sb-opa"):
        rolled_out(scratch_namespace, name)
    wait_for("the sb-redis pod running", lambda: [p for p in pods(scratch_namespace, "sb-redis")
                                                  if p["status"].get("phase") == "Running"])
    t = target(scratch_namespace)
    probe = [Probe.resolve("localhost")]

    with pytest.raises(ProbeError, match=rf"workload 'somamemory' has no Ready pod in namespace "
                                         rf"{scratch_namespace}: none"):
        t.run_probes("somamemory", probe)
    with pytest.raises(ProbeError, match=r"workload 'redis' has no Ready pod .*sb-redis-\S+ \(Running, not ready\)"):
        t.run_probes("redis", probe)
    with pytest.raises(ProbeError, match=r"(?s)pod sb-opa-\S+ \(opa\): the probe exited 1: .*Fatal Python error"):
        t.run_probes("opa", probe)


def test_an_exec_into_an_exited_container_is_a_probe_error(scratch_namespace: str) -> None:
    """A pod chosen while it served, whose container has exited by the time of the exec (here: one that exits at
    once, probed while it waits in CrashLoopBackOff; the choice of the pod is pinned to it, the rest is the real
    exec). The API refuses the exec: a ProbeError with the API's words, which are containerd's "container not found",
    "cannot exec in a deleted state" or "no running task found" when the exec lands while the exited container's task
    is being removed (each seen in a CI rehearsal: the wording depends on the instant).

    The back-off between restarts is 10 s, then 20 s, 40 s: the exec lands inside one almost always. It is tried
    again (up to three back-offs) only when the container was seen to restart meanwhile, which is the one way the
    exec can reach a running container; the CI log showed that waiting for a later back-off can take minutes."""
    apply(scratch_namespace, deployment("somabrain", command=IDLE),
          deployment("sb-opa", container="opa", command=["python3", "-c", "pass"]))
    rolled_out(scratch_namespace, "somabrain")

    def backing_off(after: int) -> tuple[str, int] | None:
        for pod in pods(scratch_namespace, "sb-opa"):
            for status in pod["status"].get("containerStatuses") or []:
                waiting = (status.get("state") or {}).get("waiting") or {}
                restarts = int(status.get("restartCount", 0))
                if waiting.get("reason") == "CrashLoopBackOff" and restarts > after:
                    return str(pod["metadata"]["name"]), restarts
        return None

    t = target(scratch_namespace)
    seen = -1
    for _ in range(3):
        pod, seen = wait_for("the sb-opa container exited, waiting to restart",
                             functools.partial(backing_off, seen), timeout=300)
        t.serving_pod = functools.partial(lambda chosen, workload: (chosen, "opa"), pod)  # type: ignore[method-assign]
        try:
            t.run_probes("opa", [Probe.resolve("localhost")])
        except ProbeError as error:
            assert re.search(rf"pod {pod}.*(container not found|cannot exec in a deleted state|no running task found)",
                             str(error)), error
            return
        restarted = get(scratch_namespace, "pod", pod)["status"]["containerStatuses"][0]["restartCount"]
        assert restarted > seen, f"the exec into {pod} succeeded while its container was backing off"
    pytest.fail("the sb-opa container restarted during each of three execs")


def test_an_ephemeral_container_that_cannot_start_is_a_probe_error(scratch_namespace: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The probes' image is the one Deployment somabrain names; when it cannot be pulled, the `sb-probe`
    container never starts, and the probe of a python-less pod says so (after the start timeout, shortened)."""
    missing = somabrain_image().rpartition(":")[0] + ":sb-no-such-tag"
    apply(scratch_namespace, deployment("somabrain", image=missing, command=IDLE),
          deployment("sb-redis", container="redis", image=prod_image("sb-redis")))
    rolled_out(scratch_namespace, "sb-redis")
    monkeypatch.setattr(kube, "EPHEMERAL_START_TIMEOUT", 20.0)
    with pytest.raises(ProbeError, match=rf"ephemeral probe container {PROBE_CONTAINER} \(image {missing}\) did "
                                         r"not start within 20 s: .*waiting"):
        target(scratch_namespace).run_probes("redis", [Probe.resolve("localhost")])


def test_unready_pods_make_the_workload_not_ready(scratch_namespace: str) -> None:
    """sb-redis's readiness probe fails: the workload is not ready and its Service lists the pod as not ready;
    somabrain beside it is ready."""
    apply(scratch_namespace, deployment("somabrain", command=IDLE),
          deployment("sb-redis", container="redis", command=IDLE, readiness=NEVER_READY), service("sb-redis", 6379))
    rolled_out(scratch_namespace, "somabrain")

    def failed_readiness() -> bool:
        events = get(scratch_namespace, "events", "--field-selector", "reason=Unhealthy")["items"]
        return any(e["involvedObject"]["name"].startswith("sb-redis-") for e in events)

    wait_for("a failed readiness probe of sb-redis", failed_readiness)
    t = target(scratch_namespace)
    redis = t.declared("redis")
    assert not redis.ready and list(redis.replicas.values()) == [False]
    assert redis.detail == "Deployment/sb-redis: 0/1 pods Ready"
    assert t.declared("somabrain").ready
    subsets = t.endpoints("sb-redis")["subsets"]
    assert [len(s.get("addresses") or []) for s in subsets] == [0]
    assert [len(s.get("notReadyAddresses") or []) for s in subsets] == [1]


def test_probes_choose_a_ready_pod_of_the_current_replicaset(scratch_namespace: str) -> None:
    """A rollout leaves the old pod behind: first Terminating (its python ignores SIGTERM for the grace period),
    then, when the next template never turns Ready, the previous revision's pod kept Ready beside it. The probes
    run in the current revision's Ready pod (it answers its own revision), and never fall back to an old one."""
    def rev(n: int, **extra: Any) -> dict[str, Any]:
        return deployment("somabrain", command=SERVE_REV, env={"REV": str(n)}, grace=120,
                          readiness=extra.get("readiness", {"tcpSocket": {"port": 8080}, "periodSeconds": 1}))

    apply(scratch_namespace, rev(1))
    rolled_out(scratch_namespace, "somabrain")
    old, = serving(scratch_namespace, "somabrain")
    apply(scratch_namespace, rev(2))
    rolled_out(scratch_namespace, "somabrain")
    new, = serving(scratch_namespace, "somabrain")
    wait_for("the old pod terminating, still there",
             lambda: [p for p in pods(scratch_namespace, "somabrain")
                      if p["metadata"]["name"] == old["metadata"]["name"] and p["metadata"].get("deletionTimestamp")
                      and p["status"].get("phase") == "Running"])
    t = target(scratch_namespace)
    assert {p["metadata"]["name"] for p in t.pods("somabrain", current_only=False)} == {
        old["metadata"]["name"], new["metadata"]["name"]}
    assert [p["metadata"]["name"] for p in t.pods("somabrain")] == [new["metadata"]["name"]]
    assert t.serving_pod("somabrain") == (new["metadata"]["name"], "somabrain")
    answer, = t.run_probes("somabrain", [Probe.http("http://127.0.0.1:8080/")])
    assert isinstance(answer, HttpResult) and answer.status == 200 and answer.body == "2"
    spec = t.declared("somabrain")
    assert spec.ready and spec.replicas == {new["metadata"]["name"]: True}

    apply(scratch_namespace, rev(3, readiness=NEVER_READY))
    third = wait_for("the third revision's pod running", lambda: [
        p for p in serving(scratch_namespace, "somabrain")
        if p["metadata"]["name"] != new["metadata"]["name"] and p["status"].get("phase") == "Running"])
    kept = [p for p in serving(scratch_namespace, "somabrain") if p["metadata"]["name"] == new["metadata"]["name"]]
    assert kept and ready(kept[0])  # maxUnavailable 0: the previous revision's pod still serves
    t = target(scratch_namespace)
    assert [p["metadata"]["name"] for p in t.pods("somabrain")] == [third[0]["metadata"]["name"]]
    with pytest.raises(ProbeError, match=rf"{third[0]['metadata']['name']} \(Running, not ready\)"):
        t.serving_pod("somabrain")
    spec = t.declared("somabrain")
    assert not spec.ready and spec.replicas == {third[0]["metadata"]["name"]: False}

