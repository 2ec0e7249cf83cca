"""load/samplers/kube_metrics.py (KubeSampler, `somabrain load --env prod`) against the real local cluster
(`make cluster-test`).

This cluster serves no metrics.k8s.io (no metrics-server), so the sampler reads the kubelet's summary API; the
usage, the limits from the pod specs, the OOM kills and restarts are the kubelet's own, of the running deployment
and of small pods in a scratch namespace (one of them allocates past its memory limit in a restart loop).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conformance.loaders.units import k8s_quantity
from load.model import Sample
from load.samplers.docker_stats import parse_timestamp
from load.samplers.kube_metrics import METRICS_PATH, SUMMARY_PATH, KubeSampler, KubeUnavailable
from tests.cluster.live import CONTEXT, NAMESPACE, kubectl
from tests.cluster.scratch import (
    IDLE,
    apply,
    deployment,
    get,
    kubeconfig_for_service_account,
    pods,
    prod_image,
    rolled_out,
    wait_for,
)

pytestmark = pytest.mark.cluster

Healthy = subprocess.CompletedProcess[str]
OOM = ["python3", "-c", "b = bytearray(200 * 2**20)"]  # 200 MiB, touched, under a 32Mi limit


def metrics_api_served() -> bool:
    return kubectl("get", "--raw", METRICS_PATH.format(ns=NAMESPACE), namespace=None, check=False).returncode == 0


def sampler(namespace: str = NAMESPACE) -> KubeSampler:
    s = KubeSampler(namespace, context=CONTEXT)
    s.check()
    return s


def by_pod(samples: list[Sample]) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for sample in samples:
        out.setdefault(sample.workload.rpartition("/")[2], []).append(sample)
    return out


def test_samples_usage_against_pod_spec_limits(healthy: Healthy) -> None:
    """Every pod of somabrain-prod, named APP/POD, with its working set and CPU and the limits of its spec."""
    s = sampler()
    assert s.source == ("metrics.k8s.io" if metrics_api_served() else "kubelet summary")
    live = {p["metadata"]["name"]: p for p in get(NAMESPACE, "pods")["items"]
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")}
    def every_pod_read() -> bool:
        s.tick()
        return set(live) <= set(by_pod(s.recording.samples))

    wait_for("a reading of every running pod", every_pod_read, timeout=90, every=2)
    assert s.recording.errors == []
    readings = by_pod(s.recording.samples)
    for name, pod in live.items():
        limits = pod["spec"]["containers"][0].get("resources", {}).get("limits") or {}
        for sample in readings[name]:
            assert sample.workload == f"{pod['metadata']['labels']['app']}/{name}"
            assert sample.memory_bytes is not None and sample.memory_bytes > 0
            assert sample.cpu_cores is not None and sample.cpu_cores >= 0
            assert sample.memory_limit == (int(k8s_quantity(limits["memory"])) if "memory" in limits else None)
            assert sample.cpu_limit == (pytest.approx(k8s_quantity(limits["cpu"])) if "cpu" in limits else None)
            assert sample.running and sample.throttled_periods is None  # neither source has CFS counters


def summary_of(pod: dict[str, Any]) -> dict[str, Any]:
    raw = kubectl("get", "--raw", SUMMARY_PATH.format(node=pod["spec"]["nodeName"]), namespace=None).stdout
    return next(p for p in json.loads(raw)["pods"] if p["podRef"]["name"] == pod["metadata"]["name"])


def test_a_pod_is_its_declared_containers_not_the_probes_ephemeral_one(scratch_namespace: str) -> None:
    """A pod with the conformance probes' `sb-probe` ephemeral container beside its own: its sample is its own
    container's working set, the ephemeral container's is left out. (The kubelet computes its summary on each
    call, so a sample and a summary read just after it differ a little: the sample is compared with the Redis
    container's figure and with the sum of both, which differ by the probe container's whole working set.)"""
    from targets.base import Probe
    from targets.kube import KubeTarget

    apply(scratch_namespace, deployment("somabrain", command=IDLE),
          deployment("sb-redis", container="redis", image=prod_image("sb-redis")))
    rolled_out(scratch_namespace, "somabrain")
    rolled_out(scratch_namespace, "sb-redis")
    KubeTarget(context=CONTEXT, namespace=scratch_namespace).run_probes("redis", [Probe.resolve("localhost")])
    pod, = pods(scratch_namespace, "sb-redis")
    s = sampler(scratch_namespace)

    def figures() -> tuple[int, int] | None:
        containers: dict[str, Any] = {c["name"]: (c.get("memory") or {}).get("workingSetBytes")
                                      for c in summary_of(pod).get("containers") or []}
        if not containers.get("redis") or not containers.get("sb-probe"):
            return None  # the kubelet has no figures of both yet
        return int(containers["redis"]), int(containers["sb-probe"])

    def sample() -> Sample | None:
        s.tick()
        mine = by_pod(s.recording.samples).get(pod["metadata"]["name"], [])
        return mine[-1] if mine and mine[-1].memory_bytes else None

    wait_for("figures of both containers", figures, timeout=120)
    reading = wait_for("a sample of the pod", sample, timeout=60)
    redis, probe = wait_for("figures of both containers", figures, timeout=60)
    assert reading.memory_bytes is not None
    assert abs(reading.memory_bytes - redis) < abs(reading.memory_bytes - (redis + probe)), (reading, redis, probe)


def test_a_reading_is_recorded_once_per_timestamp(healthy: Healthy) -> None:
    """A reading carries its own timestamp (the kubelet's, to the second; metrics-server's refresh every 10-60 s):
    ticks closer than that see the same reading again, which is not recorded again; a fresh one is. (What each
    tick saw is taken from the sampler's own call of its source.)"""
    s = sampler()
    seen: list[list[tuple[str, str]]] = []
    read = s._usage

    def spy(pods: dict[str, dict[str, Any]]) -> list[tuple[str, str, Sample]]:
        usage = read(pods)
        seen.append([(name, stamp) for name, stamp, _ in usage])
        return usage

    s._usage = spy  # type: ignore[method-assign]

    def repeated_then_fresh() -> bool:
        s.tick()
        s.tick()  # at once: most often within the same second
        repeated = any(set(a) & set(b) for a, b in itertools.pairwise(seen))  # two ticks saw the same reading
        stamps: dict[str, set[str]] = {}
        for pod, stamp in (pair for tick in seen for pair in tick):
            stamps.setdefault(pod, set()).add(stamp)
        return repeated and any(len(v) >= 2 for v in stamps.values())  # and a pod has had a fresh one since

    wait_for("a repeated reading, then a fresh one", repeated_then_fresh, timeout=120, every=1)
    distinct = {pair for tick in seen for pair in tick}
    recorded = [(s_.workload.rpartition("/")[2], s_.t) for s_ in s.recording.samples if s_.memory_bytes is not None]
    assert len(recorded) == len(distinct) < sum(len(tick) for tick in seen)
    assert len(set(recorded)) == len(recorded)  # no reading twice


def test_an_oom_kill_and_restart_become_events(scratch_namespace: str) -> None:
    """A container under a 32Mi limit that allocates 200 MiB, restarted by its Deployment: its OOM kills and
    restarts are events of the run, each termination once; one from before the run is not counted."""
    apply(scratch_namespace, deployment("oom", command=OOM, limits={"memory": "32Mi"}),
          deployment("idle", command=IDLE))

    def waiting_after_oom() -> tuple[dict[str, Any], str] | None:
        for pod in pods(scratch_namespace, "oom"):
            for status in pod["status"].get("containerStatuses") or []:
                last = (status.get("lastState") or {}).get("terminated") or {}
                if last.get("reason") == "OOMKilled" and "waiting" in (status.get("state") or {}):
                    return pod, str(last["finishedAt"])
        return None

    # In the restart back-off after an OOM kill, the sampler starts: that kill was before the run.
    pod, before = wait_for("a first OOM kill of the oom pod", waiting_after_oom)
    s = sampler(scratch_namespace)
    s.started_at = time.time()
    workload = f"oom/{pod['metadata']['name']}"

    def events() -> set[str] | None:
        s.tick()
        kinds = {e.kind for e in s.recording.events if e.workload == workload}
        return kinds if kinds >= {"oom", "restart"} else None

    wait_for("an OOM kill and a restart during the run", events, timeout=240, every=2)
    s.tick()
    ooms = [e for e in s.recording.events if e.kind == "oom"]
    assert {e.workload for e in s.recording.events} == {workload} and all(e.t >= s.started_at for e in ooms)
    assert parse_timestamp(before) not in {e.t for e in ooms}  # the kill before the run is not counted
    assert {e.detail for e in ooms} == {"container oom"}
    assert len({e.t for e in ooms}) == len(ooms)  # each termination once, however many ticks saw it
    # while it is down, a sample says so: not running, no usage, the limit of its spec
    down = [x for x in s.recording.samples if x.workload == workload and not x.running]
    assert any(x.memory_bytes is None and x.memory_limit == 32 * 2**20 for x in down), down
    restarts = [e for e in s.recording.events if e.kind == "restart"]
    assert restarts and all(e.detail.startswith("restartCount ") for e in restarts)


def test_a_pod_without_limits_has_none(scratch_namespace: str) -> None:
    apply(scratch_namespace, deployment("limited", command=IDLE, limits={"memory": "64Mi", "cpu": "250m"}),
          deployment("unlimited", command=IDLE))
    rolled_out(scratch_namespace, "limited")
    rolled_out(scratch_namespace, "unlimited")
    s = sampler(scratch_namespace)

    def both() -> dict[str, Sample] | None:
        s.tick()
        found = {x.workload.partition("/")[0]: x for x in s.recording.samples if x.memory_bytes is not None}
        return found if {"limited", "unlimited"} <= set(found) else None

    found = wait_for("readings of both pods", both, timeout=90, every=2)
    assert found["limited"].memory_limit == 64 * 2**20 and found["limited"].cpu_limit == pytest.approx(0.25)
    assert found["unlimited"].memory_limit is None and found["unlimited"].cpu_limit is None


def test_no_source_of_usage_is_a_clear_error(healthy: Healthy, scratch_namespace: str, tmp_path: Path) -> None:
    """A namespace-scoped identity (it may list pods, nothing cluster-scoped), on a cluster without
    metrics.k8s.io: neither the metrics API nor the kubelet summary (nodes/proxy) answers, and check() says both."""
    apply(scratch_namespace, deployment("idle", command=IDLE))
    rolled_out(scratch_namespace, "idle")
    config = kubeconfig_for_service_account(
        scratch_namespace, "sampler", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
        tmp_path)
    with pytest.raises(KubeUnavailable, match=r"no source of pod usage: .*metrics-server.*nodes/proxy"):
        KubeSampler(scratch_namespace, kubeconfig=config).check()


def test_the_sampler_thread_ticks(healthy: Healthy) -> None:
    s = sampler()
    s.interval = 0.2
    ticks: list[float] = []
    tick = s.tick

    def counted() -> None:
        tick()
        ticks.append(time.time())

    s.tick = counted  # type: ignore[method-assign]
    s.start()
    try:
        wait_for("three ticks of the sampler thread", lambda: len(ticks) >= 3, timeout=60, every=0.2)
    finally:
        recording = s.stop()
    assert recording.errors == []
    assert {x.workload.partition("/")[0] for x in recording.samples} >= {"somabrain", "sb-redis", "postgres"}
