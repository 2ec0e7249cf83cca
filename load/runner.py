"""One run: sample the workloads while locust plays a profile, then judge, plot and write the report.

Report directory contents:
    locust_stats.csv, locust_stats_history.csv, locust_failures.csv, locust_exceptions.csv, locust.html
    locust.log                 locust's own output
    samples.csv                every resource sample (t, workload, memory, limits, cpu, throttling)
    verdict.json               the verdict (see verdict.judge)
    resources_WORKLOAD.png     one plot per workload
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from load import plots
from load.environments import ROOT, Environment
from load.locust_run import SOMABRAIN_USERS, read_history, read_stats, run_locust
from load.model import Sample
from load.samplers.base import Sampler
from load.schedule import PROFILES, Profile, parse_weights
from load.verdict import judge, render

LOCUSTFILE = ROOT / "load" / "locustfile.py"
ROUTES_OF = {"ReaderUser": ("POST /recall", "POST /remember"), "WriterUser": ("POST /remember", "POST /recall"),
             "ActorUser": ("POST /act",), "HealthPoller": ("GET /health",)}
SETTLE_SECONDS = 2.0  # samples before and after the load, so the plots show the idle level


class EndpointDown(RuntimeError):
    pass


@dataclass
class RunOptions:
    profile: Profile
    report_dir: Path
    sla: dict[str, Any]
    weights: str = ""
    tenants: int = 8
    think: str = "0.5,2.0"
    jwt_options: list[str] = field(default_factory=list)
    user_classes: tuple[str, ...] = SOMABRAIN_USERS


def profile_for(name: str, users: int | None, duration: float | None) -> Profile:
    base = PROFILES[name]
    return Profile(base.name, duration or base.duration, users or base.users, base.summary)


def check_endpoint(endpoint: str) -> None:
    try:
        # a reachability check only: the prod ingress may use a private CA
        response = httpx.get(f"{endpoint}/health", timeout=5, verify=False)  # noqa: S501
    except httpx.HTTPError as exc:
        raise EndpointDown(f"{endpoint}/health does not answer ({exc}); is the stack up? (make up)") from exc
    if response.status_code >= 500:
        raise EndpointDown(f"{endpoint}/health answered {response.status_code}: {response.text[:200]}")


def locust_options(options: RunOptions) -> list[str]:
    return ["--load-profile", options.profile.name, "--load-users", str(options.profile.users),
            "--load-duration", str(options.profile.duration), "--load-think", options.think,
            "--load-weights", options.weights, "--load-tenants", str(options.tenants), *options.jwt_options]


def write_samples(path: Path, samples: list[Sample]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["t", "workload", "memory_bytes", "memory_limit", "cpu_cores", "cpu_limit",
                         "throttled_periods", "periods", "running", "restart_count"])
        for s in sorted(samples, key=lambda s: (s.t, s.workload)):
            writer.writerow([f"{s.t:.3f}", s.workload, s.memory_bytes, s.memory_limit,
                             "" if s.cpu_cores is None else f"{s.cpu_cores:.4f}", s.cpu_limit,
                             s.throttled_periods, s.periods, int(s.running), s.restart_count])


def expected_routes(options: RunOptions) -> list[str]:
    weights = parse_weights(options.weights)
    names = {"ReaderUser": "reader", "WriterUser": "writer", "ActorUser": "actor", "HealthPoller": "health"}
    routes: list[str] = []
    for cls in options.user_classes:
        if weights.get(names.get(cls, ""), 1) > 0:
            routes += [r for r in ROUTES_OF.get(cls, ()) if r not in routes]
    return routes


def run(environment: Environment, sampler: Sampler, options: RunOptions) -> tuple[dict[str, Any], int]:
    """Play the profile against the environment; return (verdict, exit code 0 pass / 1 breach)."""
    check_endpoint(environment.endpoint)
    sampler.check()
    report = options.report_dir
    report.mkdir(parents=True, exist_ok=True)
    profile = options.profile
    print(f"==> {profile.name}: {profile.summary}; {profile.users} users, {profile.duration:g} s against "
          f"{environment.endpoint}; sampling {environment.scope} about once a second"
          + (f" ({sampler.source})" if sampler.source else ""), flush=True)
    sampler.start()
    started = time.time()
    try:
        time.sleep(SETTLE_SECONDS)
        locust_code = run_locust(locustfile=LOCUSTFILE, host=environment.endpoint,
                                 user_classes=options.user_classes, options=locust_options(options),
                                 csv_prefix=report / "locust", html=report / "locust.html",
                                 timeout=profile.duration + 120, log=report / "locust.log")
        time.sleep(SETTLE_SECONDS)
    finally:
        recording = sampler.stop()
    ended = time.time()
    routes, total = read_stats(report / "locust_stats.csv")
    history = read_history(report / "locust_stats_history.csv")
    run_info = {"env": environment.name, "endpoint": environment.endpoint, "scope": environment.scope,
                "sampler": sampler.source, "profile": profile.name, "users": profile.users,
                "duration_s": profile.duration,
                "started_at": started, "ended_at": ended, "locust_exit_code": locust_code,
                "report_dir": str(report)}
    verdict = judge(samples=recording.samples, events=recording.events, routes=routes, total=total, sla=options.sla,
                    run=run_info, expected_routes=expected_routes(options), sampling_errors=recording.errors)
    write_samples(report / "samples.csv", recording.samples)
    titles = {name: f"{profile.name}, {profile.users} users, peak memory "
                    + (f"{w['memory_peak_share']:.0%}" if w["memory_peak_share"] is not None else "?")
                    + " of limit" for name, w in verdict["workloads"].items()}
    verdict["plots"] = [p.name for p in plots.plot_all(report, recording.samples, history, recording.events,
                                                        started, titles)]
    (report / "verdict.json").write_text(json.dumps(verdict, indent=2) + "\n")
    print(render(verdict))
    print(f"\nreport: {report} (verdict.json, locust.html, {len(verdict['plots'])} plots)")
    return verdict, 0 if verdict["passed"] else 1
