"""Service-core benchmark, run by hand (`make bench`), never in CI.

In one run, on this machine, with the same client for every target:
- req/s of `/health` and `POST /act` (somabrain api, 1 Hypercorn worker, real Redis/Postgres/SomaMemory) against a
  bare Quart hello-world on the same Hypercorn settings: reported as ratios (targets: >= 0.9x and >= 0.5x), with
  the server's CPU time per request beside them;
- mahal per-vector cost: numpy one vector at a time (what an unbatched server pays per request), numpy batch-64,
  and the JAX micro-batcher with 64 concurrent callers (target: <= 1.0x numpy per vector).

The targets are measured in alternating rounds (bare, /health, /act, bare, ...) and each ratio is the median of its
rounds' ratios to the bare run of the same round, so a slow spell on a shared machine moves one round, not the
result. With two or more CPUs the measured servers (the API and the baseline) are pinned to the last CPU and
everything else (the load client, Redis, Postgres, SomaMemory) to the others, so the client never competes with
the server it measures; --no-pin turns that off. --before DIR serves a second API from another checkout (e.g. a
`git worktree` of an older commit) in the same rounds, for a before/after pair measured the same way.

The HTTP client is wrk (Debian package) when present, else a bounded asyncio httpx loop. Absolute numbers depend on
the machine; the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

import httpx
import numpy as np

from localservers.servers import AppServer, PostgresServer, Process, RedisServer, free_port, http_status, wait_for


class RunFailed(Exception):
    """A measured server answered other than 2xx: its figure would be of the errors, not of the route."""


def _sample(url: str, body: dict[str, str] | None) -> str:
    """One request as the load sends it, for the failure message: what the server answers and why."""
    try:
        answer = httpx.request("POST" if body else "GET", url, json=body, headers={"X-Tenant-ID": "bench"}, timeout=10)
    except httpx.HTTPError as exc:
        return f"a single request failed too: {type(exc).__name__}: {exc}"
    return f"a single request now answers {answer.status_code}: {answer.text[:300]}"


def wrk(url: str, seconds: int, connections: int, lua: str | None, threads: int = 2,
        body: dict[str, str] | None = None) -> float:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", url]
    if lua:
        script = Path(tempfile.mkstemp(suffix=".lua")[1])
        script.write_text(lua)
        argv[1:1] = ["-s", str(script)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RunFailed(f"{url}: {errors.group(1)} of the run's answers were not 2xx; {_sample(url, body)}")
    assert match, out
    return float(match.group(1))


async def _httpx_load(url: str, seconds: int, connections: int, body: dict[str, str] | None) -> float:
    count = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(limits=limits, headers={"X-Tenant-ID": "bench"}) as client:

        async def worker() -> None:
            nonlocal count
            while time.monotonic() < deadline:
                r = await (client.post(url, json=body) if body else client.get(url))
                if not r.is_success:
                    raise RunFailed(f"{url}: answered {r.status_code}: {r.text[:300]}")
                count += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
    return count / seconds


def measure(url: str, seconds: int, connections: int, body: dict[str, str] | None = None, threads: int = 2) -> float:
    if shutil.which("wrk"):
        lua = None
        if body is not None:
            lua = (
                'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                f'wrk.headers["X-Tenant-ID"] = "bench"\nwrk.body = {json.dumps(json.dumps(body))}\n'
            )
        return wrk(url, seconds, connections, lua, threads, body)
    return asyncio.run(_httpx_load(url, seconds, connections, body))


def mahal_costs(dim: int = 256, concurrency: int = 64, rounds: int = 200) -> dict[str, float]:
    from brain.predictor.batcher import MicroBatcher
    from brain.predictor.numerics import surprise_batch, surprise_numpy

    rng = np.random.default_rng(0)
    x = rng.normal(size=(concurrency, dim)).astype(np.float32)
    mu = rng.normal(size=(concurrency, dim)).astype(np.float32)
    var = rng.uniform(0.1, 1, size=(concurrency, dim)).astype(np.float32)

    started = time.perf_counter()
    for _ in range(rounds):
        for i in range(concurrency):
            surprise_numpy(x[i : i + 1], mu[i : i + 1], var[i : i + 1])
    numpy_single = (time.perf_counter() - started) / (rounds * concurrency)

    started = time.perf_counter()
    for _ in range(rounds):
        surprise_numpy(x, mu, var)
    numpy_batch = (time.perf_counter() - started) / (rounds * concurrency)

    async def batched() -> float:
        batcher = MicroBatcher(surprise_batch, dim, max_batch=concurrency)
        batcher.warm_up()
        batcher.start()
        try:
            begin = time.perf_counter()
            for _ in range(rounds):
                await asyncio.gather(*(batcher.score(x[i], mu[i], var[i]) for i in range(concurrency)))
            return (time.perf_counter() - begin) / (rounds * concurrency)
        finally:
            await batcher.stop()

    return {"numpy_one_at_a_time_us": numpy_single * 1e6, "numpy_batch64_us": numpy_batch * 1e6,
            "jax_microbatched_us": asyncio.run(batched()) * 1e6}


def pin(pid: int, cpus: set[int]) -> None:
    """Pin every thread of process `pid` (threads started later inherit from the thread that starts them)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), cpus)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid`, all its threads, so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    name: str
    url: str
    body: dict[str, str] | None
    pid: int
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # server CPU time per request, per round


def run_round(target: Target, seconds: int, connections: int, threads: int) -> None:
    before = cpu_seconds(target.pid)
    rps = measure(target.url, seconds, connections, target.body, threads)
    target.rps.append(rps)
    target.cpu_us.append((cpu_seconds(target.pid) - before) / max(rps * seconds, 1) * 1e6)


def summarise(targets: list[Target]) -> dict[str, object]:
    bare, *others = targets
    results: dict[str, object] = {"bare_rps": round(median(bare.rps)), "bare_cpu_us": round(median(bare.cpu_us))}
    for t in others:
        ratios = [rps / base for rps, base in zip(t.rps, bare.rps, strict=True)]
        results[f"{t.name}_rps"] = round(median(t.rps))
        results[f"{t.name}_cpu_us"] = round(median(t.cpu_us))
        results[f"{t.name}_ratio"] = round(median(ratios), 3)
        results[f"{t.name}_ratio_rounds"] = [round(r, 3) for r in ratios]
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8, help="duration of each HTTP run (default 8)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds over the targets (default 4)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin the measured servers and the client to separate CPUs")
    parser.add_argument("--before", type=Path, metavar="DIR",
                        help="also serve an API from the checkout DIR (its brain/), measured in the same rounds")
    args = parser.parse_args()
    if args.before is not None and not (args.before / "brain" / "api" / "app.py").is_file():
        parser.error(f"--before {args.before}: not a SomaBrain checkout (no brain/api/app.py)")
    if args.rounds < 1 or args.seconds < 1:
        parser.error("--rounds and --seconds must be at least 1")
    cpus = sorted(os.sched_getaffinity(0))
    pinned = args.pin and len(cpus) >= 2
    server_cpus, client_cpus = ({cpus[-1]}, set(cpus[:-1])) if pinned else (set(cpus), set(cpus))
    os.sched_setaffinity(0, client_cpus)  # what starts from here (Redis, Postgres, SomaMemory, wrk) inherits it
    threads = min(2, len(client_cpus))
    run = Path(tempfile.mkdtemp(prefix="somabrain-bench-"))
    os.chmod(run, 0o755)
    print(f"==> starting Redis, Postgres, SomaMemory, the API and the baseline (logs in {run})", flush=True)
    if pinned:
        print(f"==> measured servers on CPU {sorted(server_cpus)}, the client and dependencies on CPU "
              f"{sorted(client_cpus)}", flush=True)
    redis, pg = RedisServer(run), PostgresServer(run)
    redis.start()
    pg.start()
    memory = AppServer("memory", {"SOMABRAIN_POSTGRES_DSN": pg.dsn}, run)
    memory.start()
    env = {
        "SOMABRAIN_STRICT_REAL": "1", "SOMABRAIN_REQUIRE_MEMORY": "1", "SOMABRAIN_REDIS_URL": redis.url,
        "SOMABRAIN_POSTGRES_DSN": pg.dsn, "SOMABRAIN_MEMORY_HTTP_ENDPOINT": memory.url,
        "SOMABRAIN_LOG_LEVEL": "warning",
        # One tenant and one client address: the tenant's bucket is off, and the address's is kept (its cost is
        # part of every unauthenticated request) but far above what one worker serves (at its default 1000/s,
        # /act got 429s once it served faster than that).
        "SOMABRAIN_RATE_LIMIT_RPS": "0", "SOMABRAIN_RATE_LIMIT_ADDRESS_RPS": "1000000",
        "SOMABRAIN_RATE_LIMIT_ADDRESS_BURST": "10000000"}
    apis = {"": AppServer("api", env, run)}
    if args.before is not None:
        apis["before_"] = AppServer("api", env, run, source=args.before.resolve())
    port = free_port()
    # load.hello_server: the Hypercorn settings `somabrain api` serves with (one in-process worker).
    hello = Process("hello", [sys.executable, "-m", "load.hello_server", "--bind", f"127.0.0.1:{port}"], run)
    try:
        for api in apis.values():
            api.start()
        hello.start()
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/") == 200, "hello-world")
        assert hello.proc is not None
        targets = [Target("bare", f"http://127.0.0.1:{port}/", None, hello.proc.pid)]
        for prefix, api in apis.items():
            assert api.process.proc is not None
            pid = api.process.proc.pid
            targets += [Target(f"{prefix}health", f"{api.url}/health", None, pid),
                        Target(f"{prefix}act", f"{api.url}/act", {"task": "plan the quarterly review"}, pid)]
        for target in targets:
            pin(target.pid, server_cpus)
        client = "wrk" if shutil.which("wrk") else "httpx"
        print(f"==> warm-up, then {args.rounds} rounds of {args.seconds}s per target at {args.connections} "
              f"connections ({client})", flush=True)
        for target in targets:
            measure(target.url, 2, args.connections, target.body, threads)
        for n in range(1, args.rounds + 1):
            for target in targets:
                run_round(target, args.seconds, args.connections, threads)
            line = ", ".join(f"{t.name} {t.rps[-1]:.0f} req/s ({t.cpu_us[-1]:.0f} us CPU/req)" for t in targets)
            print(f"    round {n}: {line}", flush=True)
        results: dict[str, object] = {"pinned": pinned, "rounds": args.rounds, "seconds": args.seconds}
        results.update(summarise(targets))
    except RunFailed as exc:
        print(f"bench: {exc} (server logs in {run})", file=sys.stderr)
        return 1
    finally:
        hello.stop()
        for api in apis.values():
            api.stop()
        memory.stop()
        pg.cleanup()
        redis.stop()
    os.sched_setaffinity(0, set(cpus))
    print("==> mahal per-vector cost", flush=True)
    costs = mahal_costs()
    results.update({k: round(v, 3) for k, v in costs.items()})
    results["mahal_vs_numpy_one_at_a_time"] = round(costs["jax_microbatched_us"] / costs["numpy_one_at_a_time_us"], 3)
    results["mahal_vs_numpy_batch64"] = round(costs["jax_microbatched_us"] / costs["numpy_batch64_us"], 3)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
