"""load/samplers/kube_metrics.py against the FAKE Kubernetes API of kube_fake.py (real JSON shapes, no cluster)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from load.quantities import parse_quantity
from load.samplers.kube_metrics import KubeSampler, KubeUnavailable
from tests.load.kube_fake import KubeFake

POD = "somabrain-7d9f6c5b4-x2k8p"


@pytest.fixture
def fake() -> Iterator[KubeFake]:
    with KubeFake() as server:
        server.add_pod(POD, app="somabrain", limits={"cpu": "1200m", "memory": "2Gi"})
        server.add_pod("sb-redis-5f7d8-abcde", app="sb-redis", limits={"cpu": "200m", "memory": "256Mi"})
        yield server


def sampler(fake: KubeFake, tmp_path: Path) -> KubeSampler:
    s = KubeSampler("somabrain-prod", kubeconfig=str(fake.kubeconfig(tmp_path)))
    s.started_at = 1_800_000_000.0
    return s


@pytest.mark.parametrize(("text", "value"), [
    ("1200m", 1.2), ("350000000n", 0.35), ("2Gi", 2 * 2**30), ("524288Ki", 512 * 2**20), ("1", 1.0),
    ("250u", 0.00025), ("1e3", 1000.0), ("64M", 64e6)])
def test_quantities(text: str, value: float) -> None:
    assert parse_quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "12x", "Gi", "1.2.3Mi"])
def test_bad_quantity(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)


def test_samples_usage_against_pod_spec_limits(fake: KubeFake, tmp_path: Path) -> None:
    fake.set_usage(POD, cpu="350000000n", memory="524288Ki", timestamp=1_800_000_015)
    fake.set_usage("sb-redis-5f7d8-abcde", cpu="2000000n", memory="8192Ki", timestamp=1_800_000_015)
    s = sampler(fake, tmp_path)
    s.check()
    s.tick()
    by_name = {x.workload: x for x in s.recording.samples}
    assert set(by_name) == {f"somabrain/{POD}", "sb-redis/sb-redis-5f7d8-abcde"}
    brain = by_name[f"somabrain/{POD}"]
    assert brain.memory_bytes == 512 * 2**20
    assert brain.memory_limit == 2 * 2**30
    assert brain.cpu_cores == pytest.approx(0.35)
    assert brain.cpu_limit == pytest.approx(1.2)
    assert brain.t == 1_800_000_015
    assert brain.throttled_periods is None  # the metrics API has no CFS counters
    assert any("metrics.k8s.io" in path for path in fake.requests)


def test_a_reading_is_recorded_once_per_metrics_timestamp(fake: KubeFake, tmp_path: Path) -> None:
    fake.set_usage(POD, cpu="100m", memory="100Mi", timestamp=1_800_000_015)
    s = sampler(fake, tmp_path)
    s.tick()
    s.tick()  # metrics-server has not refreshed: same timestamp
    assert len([x for x in s.recording.samples if x.workload.startswith("somabrain")]) == 1
    fake.set_usage(POD, cpu="200m", memory="110Mi", timestamp=1_800_000_030)
    s.tick()
    readings = [x for x in s.recording.samples if x.workload.startswith("somabrain")]
    assert [x.cpu_cores for x in readings] == [pytest.approx(0.1), pytest.approx(0.2)]


def test_oom_kill_and_restart_become_events(fake: KubeFake, tmp_path: Path) -> None:
    fake.set_usage(POD, cpu="900m", memory="2000Mi", timestamp=1_800_000_015)
    s = sampler(fake, tmp_path)
    s.tick()
    assert s.recording.events == []
    fake.oom_restart(POD, finished=1_800_000_020)
    s.tick()
    kinds = sorted(e.kind for e in s.recording.events)
    assert kinds == ["oom", "restart"]
    assert {e.workload for e in s.recording.events} == {f"somabrain/{POD}"}
    s.tick()  # the same termination is reported once
    assert len(s.recording.events) == 2


def test_an_oom_before_the_run_is_not_counted(fake: KubeFake, tmp_path: Path) -> None:
    fake.oom_restart(POD, finished=1_700_000_000)  # long before started_at
    s = sampler(fake, tmp_path)
    s.tick()
    assert s.recording.events == []


def test_pod_without_limits_has_none(fake: KubeFake, tmp_path: Path) -> None:
    fake.add_pod("opa-1-aaaaa", app="sb-opa", limits=None)
    fake.set_usage("opa-1-aaaaa", cpu="1m", memory="20Mi", timestamp=1_800_000_015)
    s = sampler(fake, tmp_path)
    s.tick()
    opa = next(x for x in s.recording.samples if x.workload.startswith("sb-opa"))
    assert opa.memory_limit is None and opa.cpu_limit is None


def test_missing_metrics_api_is_a_clear_error(fake: KubeFake, tmp_path: Path) -> None:
    fake.serve_metrics = False
    with pytest.raises(KubeUnavailable, match="metrics-server"):
        sampler(fake, tmp_path).check()


def test_no_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KubeUnavailable, match="needs a Kubernetes cluster"):
        KubeSampler("somabrain-prod", kubeconfig=str(tmp_path / "absent")).check()


def test_sampler_thread_runs_about_once_a_second(fake: KubeFake, tmp_path: Path) -> None:
    fake.set_usage(POD, cpu="100m", memory="100Mi", timestamp=time.time())
    s = KubeSampler("somabrain-prod", kubeconfig=str(fake.kubeconfig(tmp_path)))
    s.interval = 0.05
    s.start()
    deadline = time.monotonic() + 10
    while len(fake.requests) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    recording = s.stop()
    assert recording.errors == []
    assert len([p for p in fake.requests if "metrics.k8s.io" in p]) >= 3
