"""Service-core benchmark, run by hand (`make bench`), never in CI.

In one run, on this machine, with the same client for every target:
- req/s of `/health` and `POST /act` (somabrain api, 1 Hypercorn worker, real Redis/Postgres/SomaMemory) against a
  bare Quart hello-world on the same Hypercorn settings: reported as ratios (targets: >= 0.8x and >= 0.5x);
- mahal per-vector cost: numpy one vector at a time (what an unbatched server pays per request), numpy batch-64,
  and the JAX micro-batcher with 64 concurrent callers (target: <= 1.0x numpy per vector).

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
from pathlib import Path

import httpx
import numpy as np

from localservers.servers import AppServer, PostgresServer, Process, RedisServer, free_port, http_status, wait_for


def wrk(url: str, seconds: int, connections: int, lua: str | None) -> float:
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url]
    if lua:
        script = Path(tempfile.mkstemp(suffix=".lua")[1])
        script.write_text(lua)
        argv[1:1] = ["-s", str(script)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} non-2xx responses\n{out}")
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
                r.raise_for_status()
                count += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
    return count / seconds


def measure(url: str, seconds: int, connections: int, body: dict[str, str] | None = None) -> float:
    if shutil.which("wrk"):
        lua = None
        if body is not None:
            lua = (
                'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                f'wrk.headers["X-Tenant-ID"] = "bench"\nwrk.body = {json.dumps(json.dumps(body))}\n'
            )
        return wrk(url, seconds, connections, lua)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="duration of each HTTP run (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    args = parser.parse_args()
    run = Path(tempfile.mkdtemp(prefix="somabrain-bench-"))
    os.chmod(run, 0o755)
    print(f"==> starting Redis, Postgres, SomaMemory, the API and the baseline (logs in {run})", flush=True)
    redis, pg = RedisServer(run), PostgresServer(run)
    redis.start()
    pg.start()
    memory = AppServer("memory", {"SOMABRAIN_POSTGRES_DSN": pg.dsn}, run)
    memory.start()
    api = AppServer("api", {
        "SOMABRAIN_STRICT_REAL": "1", "SOMABRAIN_REQUIRE_MEMORY": "1", "SOMABRAIN_REDIS_URL": redis.url,
        "SOMABRAIN_POSTGRES_DSN": pg.dsn, "SOMABRAIN_MEMORY_HTTP_ENDPOINT": memory.url,
        "SOMABRAIN_LOG_LEVEL": "warning", "SOMABRAIN_RATE_LIMIT_RPS": "0"}, run)  # one tenant: no 429s
    api.start()
    port = free_port()
    # load.hello_server: the Hypercorn settings `somabrain api` serves with (one in-process worker).
    hello = Process("hello", [sys.executable, "-m", "load.hello_server", "--bind", f"127.0.0.1:{port}"], run)
    hello.start()
    wait_for(lambda: http_status(f"http://127.0.0.1:{port}/") == 200, "hello-world")
    try:
        results: dict[str, float] = {}
        client = "wrk" if shutil.which("wrk") else "httpx"
        for name, url, body in [
            ("bare", f"http://127.0.0.1:{port}/", None),
            ("health", f"{api.url}/health", None),
            ("act", f"{api.url}/act", {"task": "plan the quarterly review"}),
        ]:
            print(f"==> {name}: {args.seconds}s at {args.connections} connections ({client})", flush=True)
            results[f"{name}_rps"] = measure(url, args.seconds, args.connections, body)
        print("==> mahal per-vector cost", flush=True)
        results.update(mahal_costs())
    finally:
        hello.stop()
        api.stop()
        memory.stop()
        pg.cleanup()
        redis.stop()
    results["health_ratio"] = results["health_rps"] / results["bare_rps"]
    results["act_ratio"] = results["act_rps"] / results["bare_rps"]
    results["mahal_vs_numpy_one_at_a_time"] = results["jax_microbatched_us"] / results["numpy_one_at_a_time_us"]
    results["mahal_vs_numpy_batch64"] = results["jax_microbatched_us"] / results["numpy_batch64_us"]
    print(json.dumps({k: round(v, 3) for k, v in results.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
