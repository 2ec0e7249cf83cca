"""The verdict: resource breaches, route SLAs, advice, and the printed form."""

from __future__ import annotations

import json

import pytest

from load.locust_run import RouteStats
from load.model import Event, Sample
from load.sla import load_sla
from load.verdict import judge, percentile, render

MIB = 2**20


def samples(workload: str, memory_mib: list[float], cpu: list[float | None], *, memory_limit_mib: int = 512,
            cpu_limit: float = 1.0, periods: list[int] | None = None, throttled: list[int] | None = None,
            running: list[bool] | None = None) -> list[Sample]:
    return [Sample(t=1000.0 + i, workload=workload, memory_bytes=int(m * MIB), memory_limit=memory_limit_mib * MIB,
                   cpu_cores=c, cpu_limit=cpu_limit, periods=None if periods is None else periods[i],
                   throttled_periods=None if throttled is None else throttled[i],
                   running=True if running is None else running[i])
            for i, (m, c) in enumerate(zip(memory_mib, cpu, strict=True))]


def route(name: str = "POST /act", requests: int = 100, failures: int = 0, p50: float = 10, p95: float = 40,
          p99: float = 80) -> RouteStats:
    return RouteStats(name, requests, failures, 10.0, p50, p95, p99)


def verdict(sample_list: list[Sample], routes: list[RouteStats] | None = None, events: list[Event] | None = None,
            **sla_settings: str) -> dict:
    sla = load_sla(settings=[f"{k}={v}" for k, v in sla_settings.items()])
    return judge(samples=sample_list, events=events or [], routes=routes if routes is not None else [route()],
                 total=None, sla=sla, run={"env": "dev", "profile": "smoke"})


def test_percentile_nearest_rank() -> None:
    assert percentile([], 0.95) is None
    assert percentile([5.0], 0.95) == 5.0
    assert percentile([float(i) for i in range(1, 101)], 0.95) == 95.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0


def test_within_limits_passes_and_reports_shares() -> None:
    result = verdict(samples("somabrain", [100, 150, 200, 120], [None, 0.2, 0.4, 0.3]))
    assert result["passed"] is True and result["breaches"] == []
    brain = result["workloads"]["somabrain"]
    assert brain["memory_peak_bytes"] == 200 * MIB
    assert brain["memory_peak_share"] == pytest.approx(200 / 512)
    assert brain["memory_p95_share"] == pytest.approx(200 / 512)
    assert brain["cpu_peak_cores"] == pytest.approx(0.4)
    assert brain["cpu_p95_share"] == pytest.approx(0.4)
    json.dumps(result)  # JSON-ready


def test_memory_peak_above_the_threshold_is_a_breach() -> None:
    result = verdict(samples("somabrain", [100, 470, 200], [None, 0.1, 0.1]))
    assert result["passed"] is False
    assert result["breaches"] == ["somabrain: memory peak 470 MiB is 92% of its 512 MiB limit (max 90%)"]
    assert "too close" in " ".join(result["advice"])


def test_the_threshold_is_overridable() -> None:
    assert verdict(samples("somabrain", [100, 470], [None, 0.1]), **{"resources.memory_max": "0.95"})["passed"]


def test_oom_kill_restart_and_stop_are_breaches() -> None:
    sample_list = samples("somabrain", [400, 500, 0], [None, 0.5, None], running=[True, True, False])
    result = verdict(sample_list, events=[Event(1002, "somabrain", "oom"), Event(1002, "somabrain", "die")])
    assert result["workloads"]["somabrain"]["oom_kills"] == 1
    assert "somabrain: 1 OOM kill(s) during the run" in result["breaches"]
    assert not any("stopped running" in b for b in result["breaches"])  # the OOM explains the stop
    restarted = verdict(samples("redis", [10, 10], [None, 0.01], memory_limit_mib=64),
                        events=[Event(1001, "redis", "restart")])
    assert restarted["breaches"] == ["redis: 1 restart(s) during the run"]
    stopped = verdict(samples("kafka", [10, 10], [None, None], running=[True, False]))
    assert stopped["breaches"] == ["kafka: stopped running during the run"]


def test_cpu_throttling_is_reported_and_breaches_only_when_configured() -> None:
    sample_list = samples("sb_redis", [8, 8, 8], [None, 0.1, 0.1], memory_limit_mib=64, cpu_limit=0.1,
                          periods=[100, 110, 120], throttled=[10, 18, 26])
    result = verdict(sample_list)
    redis = result["workloads"]["sb_redis"]
    assert redis["cpu_throttled_ratio"] == pytest.approx(16 / 20)
    assert redis["cpu_saturated_share"] == pytest.approx(1.0)
    assert result["passed"] is True
    assert any("CPU-bound" in a for a in result["advice"])
    strict = verdict(sample_list, **{"resources.cpu_throttled_max": "0.5"})
    assert strict["breaches"] == ["sb_redis: CPU throttled in 80% of periods (max 50%)"]


def test_throttling_counters_survive_a_container_restart() -> None:
    sample_list = samples("x", [8, 8, 8, 8], [None, 0.1, None, 0.1], periods=[100, 110, 5, 15],
                          throttled=[0, 5, 1, 2])
    assert verdict(sample_list)["workloads"]["x"]["cpu_throttled_ratio"] == pytest.approx((5 + 1 + 1) / (10 + 5 + 10))


def test_route_thresholds_failures_and_minimum() -> None:
    slow = route("POST /act", p95=1500)
    failing = route("POST /recall", requests=100, failures=5)
    result = verdict(samples("somabrain", [100], [None]), routes=[slow, failing, route("GET /health")])
    assert "POST /act: p95 1500 ms > 1000 ms" in result["breaches"]
    assert "POST /recall: 5/100 failed (5.0% > 1.0%)" in result["breaches"]
    assert result["routes"]["GET /health"]["breaches"] == []


def test_an_expected_route_nobody_reached_is_a_breach() -> None:
    sla = load_sla()
    result = judge(samples=samples("s", [1], [None]), events=[], routes=[route("POST /act")], total=None, sla=sla,
                   run={}, expected_routes=["POST /act", "POST /recall"])
    assert result["routes"]["POST /recall"]["requests"] == 0
    assert "POST /recall: 0 request(s), fewer than 1" in result["breaches"]


def test_far_above_use_advice() -> None:
    result = verdict(samples("kafka", [20, 22], [None, 0.01], memory_limit_mib=512, cpu_limit=0.5))
    advice = " ".join(result["advice"])
    assert "kafka: memory limit 512 MiB is far above use" in advice
    assert "about 48 MiB keeps the peak at 60%" in advice  # 22 MiB / 0.6 rounded up to 16 MiB steps


def test_no_samples_is_a_breach_not_a_pass() -> None:
    result = judge(samples=[], events=[], routes=[route()], total=None, sla=load_sla(), run={})
    assert result["passed"] is False


def test_unlimited_workload_is_flagged() -> None:
    unlimited = [Sample(1000, "opa", 20 * MIB, None, None, None)]
    result = judge(samples=unlimited, events=[], routes=[route()], total=None, sla=load_sla(), run={})
    assert result["breaches"] == ["opa: no memory limit is set, so none can be checked"]


def test_render_names_the_verdict() -> None:
    text = render(verdict(samples("somabrain", [100, 470], [None, 0.1])))
    assert "VERDICT: BREACH (1)" in text
    assert "somabrain" in text and "POST /act" in text
    assert "VERDICT: PASS" in render(verdict(samples("somabrain", [100], [None])))
