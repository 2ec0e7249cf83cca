"""The verdict: resource use per workload and latency per route, judged against the SLA.

`judge()` is pure: samples, events and route statistics in, a JSON-ready dict out, with `breaches` listing
every reason to fail (empty = pass). `render()` prints it for a person.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from load.locust_run import RouteStats
from load.model import Event, Sample
from load.sla import route_thresholds

MIB = 2**20
SATURATED = 0.95  # a sample at >= 95 % of the CPU limit counts as saturated


def percentile(values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile (share in 0..1) of the values; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _ratio(value: float | None, limit: float | None) -> float | None:
    return None if value is None or not limit else value / limit


def _positive_deltas(values: Iterable[int | None]) -> int:
    """Sum of increases of a cumulative counter, tolerant of resets (a restarted container starts at 0)."""
    total, previous = 0, None
    for value in values:
        if value is None:
            continue
        if previous is not None:
            total += value - previous if value >= previous else value
        previous = value
    return total


def _suggest(peak: float, target: float, unit: float) -> float:
    return math.ceil(peak / target / unit) * unit


def advice(name: str, stats: dict[str, Any], sla: dict[str, Any]) -> list[str]:
    tips = (sla.get("resources") or {}).get("advice") or {}
    low, high, target = tips.get("low_use", 0.25), tips.get("high_use", 0.75), tips.get("target_use", 0.6)
    result = []
    share, limit, peak = stats["memory_peak_share"], stats["memory_limit_bytes"], stats["memory_peak_bytes"]
    if share is not None and limit and peak:
        suggested = _suggest(peak, target, 16 * MIB) / MIB
        if share < low:
            result.append(f"{name}: memory limit {limit / MIB:.0f} MiB is far above use at this load (peak "
                          f"{peak / MIB:.0f} MiB, {share:.0%}); about {suggested:.0f} MiB keeps the peak at "
                          f"{target:.0%}")
        elif share > high:
            result.append(f"{name}: memory peak {peak / MIB:.0f} MiB is {share:.0%} of its {limit / MIB:.0f} MiB "
                          f"limit, too close; raise it to about {suggested:.0f} MiB")
    cpu_share, cpu_limit, cpu_peak = stats["cpu_p95_share"], stats["cpu_limit_cores"], stats["cpu_p95_cores"]
    throttled = stats["cpu_throttled_ratio"]
    if cpu_share is not None and cpu_limit and cpu_peak is not None:
        if cpu_share > high or (throttled is not None and throttled > 0.25):
            result.append(f"{name}: CPU p95 {cpu_peak:.2f} of {cpu_limit:g} cores ({cpu_share:.0%})"
                          + (f", throttled in {throttled:.0%} of periods" if throttled else "")
                          + f"; it is CPU-bound at this load: about {_suggest(cpu_peak, target, 0.05):.2f} cores "
                          "would leave headroom")
        elif stats["cpu_peak_share"] is not None and stats["cpu_peak_share"] < low:
            result.append(f"{name}: CPU limit {cpu_limit:g} cores is far above use at this load (peak "
                          f"{stats['cpu_peak_cores']:.2f} cores, {stats['cpu_peak_share']:.0%})")
    return result


def judge_workload(name: str, samples: Sequence[Sample], events: Sequence[Event],
                   sla: dict[str, Any]) -> dict[str, Any]:
    resources = sla.get("resources") or {}
    samples = sorted(samples, key=lambda s: s.t)
    memory = [float(s.memory_bytes) for s in samples if s.memory_bytes is not None]
    cpu = [s.cpu_cores for s in samples if s.cpu_cores is not None]
    memory_limit = next((s.memory_limit for s in reversed(samples) if s.memory_limit), None)
    cpu_limit = next((s.cpu_limit for s in reversed(samples) if s.cpu_limit), None)
    periods = _positive_deltas(s.periods for s in samples)
    throttled = _positive_deltas(s.throttled_periods for s in samples)
    has_throttling = any(s.periods is not None for s in samples)
    ooms = sum(1 for e in events if e.kind == "oom")
    restarts = sum(1 for e in events if e.kind == "restart")
    stopped = any(not s.running for s in samples) or any(e.kind in ("die", "missing") for e in events)
    peak, p95 = (max(memory) if memory else None), percentile(memory, 0.95)
    cpu_peak, cpu_p95 = (max(cpu) if cpu else None), percentile(cpu, 0.95)
    stats: dict[str, Any] = {
        "samples": len(samples),
        "memory_limit_bytes": memory_limit,
        "memory_peak_bytes": int(peak) if peak is not None else None,
        "memory_p95_bytes": int(p95) if p95 is not None else None,
        "memory_peak_share": _ratio(peak, memory_limit),
        "memory_p95_share": _ratio(p95, memory_limit),
        "cpu_limit_cores": cpu_limit,
        "cpu_peak_cores": cpu_peak,
        "cpu_p95_cores": cpu_p95,
        "cpu_peak_share": _ratio(cpu_peak, cpu_limit),
        "cpu_p95_share": _ratio(cpu_p95, cpu_limit),
        "cpu_saturated_share": (sum(1 for c in cpu if cpu_limit and c >= SATURATED * cpu_limit) / len(cpu)
                                if cpu and cpu_limit else None),
        "cpu_throttled_ratio": (throttled / periods if periods else 0.0) if has_throttling else None,
        "oom_kills": ooms,
        "restarts": restarts,
        "stopped": stopped,
    }
    breaches = []
    memory_max = resources.get("memory_max")
    share = stats["memory_peak_share"]
    if memory_max is not None and share is not None and peak is not None and memory_limit and share > memory_max:
        breaches.append(f"{name}: memory peak {peak / MIB:.0f} MiB is {stats['memory_peak_share']:.0%} of its "
                        f"{memory_limit / MIB:.0f} MiB limit (max {memory_max:.0%})")
    if memory and not memory_limit:
        breaches.append(f"{name}: no memory limit is set, so none can be checked")
    throttled_max = resources.get("cpu_throttled_max")
    ratio = stats["cpu_throttled_ratio"]
    if throttled_max is not None and ratio is not None and ratio > throttled_max:
        breaches.append(f"{name}: CPU throttled in {ratio:.0%} of periods (max {throttled_max:.0%})")
    if ooms > (resources.get("oom_kills_max") or 0):
        breaches.append(f"{name}: {ooms} OOM kill(s) during the run")
    if restarts > (resources.get("restarts_max") or 0):
        breaches.append(f"{name}: {restarts} restart(s) during the run")
    if stopped and not ooms:
        breaches.append(f"{name}: stopped running during the run")
    stats["breaches"] = breaches
    stats["advice"] = advice(name, stats, sla)
    return stats


def judge_route(route: RouteStats, sla: dict[str, Any]) -> dict[str, Any]:
    limits = route_thresholds(sla, route.route)
    breaches = []
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        value, limit = getattr(route, key), limits.get(key)
        if limit is not None and value is not None and value > limit:
            breaches.append(f"{route.route}: {key[:-3]} {value:.0f} ms > {limit} ms")
    ratio_max = limits.get("failure_ratio_max")
    if ratio_max is not None and route.failure_ratio > ratio_max:
        breaches.append(f"{route.route}: {route.failures}/{route.requests} failed "
                        f"({route.failure_ratio:.1%} > {ratio_max:.1%})")
    minimum = limits.get("min_requests") or 0
    if route.requests < minimum:
        breaches.append(f"{route.route}: {route.requests} request(s), fewer than {minimum}")
    return {**route.to_dict(), "thresholds": limits, "breaches": breaches}


def judge(*, samples: Sequence[Sample], events: Sequence[Event], routes: Sequence[RouteStats],
          total: RouteStats | None, sla: dict[str, Any], run: dict[str, Any],
          expected_routes: Sequence[str] = (), sampling_errors: Sequence[str] = ()) -> dict[str, Any]:
    by_workload: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_workload[sample.workload].append(sample)
    events_by: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        events_by[event.workload].append(event)
    workloads = {name: judge_workload(name, by_workload.get(name, []), events_by.get(name, []), sla)
                 for name in sorted(set(by_workload) | set(events_by))}
    judged = {r.route: judge_route(r, sla) for r in routes}
    for route in expected_routes:  # a route no user reached still gets judged (min_requests)
        if route not in judged:
            judged[route] = judge_route(RouteStats(route, 0, 0, 0.0, None, None, None), sla)
    breaches = [b for w in workloads.values() for b in w["breaches"]]
    breaches += [b for r in judged.values() for b in r["breaches"]]
    if not samples:
        breaches.append("no resource samples were taken, so no limit could be checked")
    return {
        "run": run,
        "passed": not breaches,
        "breaches": breaches,
        "advice": [a for w in workloads.values() for a in w["advice"]],
        "workloads": workloads,
        "routes": dict(sorted(judged.items())),
        "total": total.to_dict() if total else None,
        "events": [e.to_dict() for e in sorted(events, key=lambda e: e.t)],
        "sampling_errors": list(sampling_errors)[:50],
    }


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def render(verdict: dict[str, Any]) -> str:
    run = verdict["run"]
    lines = [f"load {run.get('profile')} on {run.get('env')} ({run.get('endpoint')}): {run.get('users')} users, "
             f"{run.get('duration_s')} s", "",
             f"{'workload':<28} {'mem peak':>9} {'p95':>8} {'limit':>8} {'peak%':>6} {'cpu p95':>8} {'peak':>6} "
             f"{'limit':>6} {'thrott':>7} {'oom':>4} {'rst':>4}"]
    for name, w in verdict["workloads"].items():
        def mib(b: float | None) -> str:
            return _fmt(b / MIB if b is not None else None, ".0f")

        lines.append(
            f"{name[:28]:<28} {mib(w['memory_peak_bytes']):>9} {mib(w['memory_p95_bytes']):>8} "
            f"{mib(w['memory_limit_bytes']):>8} {_fmt(w['memory_peak_share'], '.0%'):>6} "
            f"{_fmt(w['cpu_p95_cores'], '.2f'):>8} {_fmt(w['cpu_peak_cores'], '.2f'):>6} "
            f"{_fmt(w['cpu_limit_cores'], 'g'):>6} {_fmt(w['cpu_throttled_ratio'], '.0%'):>7} "
            f"{w['oom_kills']:>4} {w['restarts']:>4}")
    lines += ["", "  (memory in MiB; cpu in cores; thrott = share of CFS periods throttled)", "",
              f"{'route':<24} {'reqs':>7} {'rps':>7} {'p50':>6} {'p95':>6} {'p99':>6} {'fail':>7}  SLA p95/p99"]
    for name, r in verdict["routes"].items():
        limits = r["thresholds"]
        lines.append(f"{name:<24} {r['requests']:>7} {r['rps']:>7.1f} {_fmt(r['p50_ms'], '.0f'):>6} "
                     f"{_fmt(r['p95_ms'], '.0f'):>6} {_fmt(r['p99_ms'], '.0f'):>6} {r['failure_ratio']:>7.1%}  "
                     f"{limits.get('p95_ms')}/{limits.get('p99_ms')} ms")
    if verdict.get("total"):
        lines.append(f"{'total':<24} {verdict['total']['requests']:>7} {verdict['total']['rps']:>7.1f}")
    if verdict["events"]:
        lines += ["", "events: " + ", ".join(f"{e['workload']} {e['kind']}" for e in verdict["events"])]
    if verdict["advice"]:
        lines += ["", "headroom advice:"] + [f"  - {a}" for a in verdict["advice"]]
    if verdict["sampling_errors"]:
        lines += ["", f"sampling errors ({len(verdict['sampling_errors'])}): {verdict['sampling_errors'][0]}"]
    lines.append("")
    if verdict["passed"]:
        lines.append("VERDICT: PASS (every workload within its limits, every route within its SLA)")
    else:
        lines.append(f"VERDICT: BREACH ({len(verdict['breaches'])})")
        lines += [f"  - {b}" for b in verdict["breaches"]]
    return "\n".join(lines)
