"""Recall benchmark, run by hand (`make bench-recall`), never in CI: SomaMemory's vector index against the scan it
replaced, measured the same way in the same run.

One tenant grows to each size in turn (default 1k, 10k, 100k memories of the seeded corpus in localservers/corpus.py),
bulk-inserted through `MemoryStore.put_many` straight into Postgres. At each size, through real `somabrain memory`
Hypercorn processes (one worker each) over that one Postgres:
- POST /recall latency, p50 and p95 (top_k 10, one request at a time on a kept-alive connection, after warm-up);
- recall@10 against exact search over every memory of the tenant (float32, ties counted as right answers);
- cost per memory: the bulk insert, and the index's catch-up with the new memories (the first recall after a fill);
  at the largest size also a cold start (a restarted process rebuilding the index from Postgres, until /readyz);
- the index's memory: vectors and graph (from GET /health), and the service's resident memory (RSS).
With --baseline REF, the same queries also go to a second process serving the `brain` package of commit REF
(exported with `git archive`), e.g. the last commit that recalled by scanning.

Writes results.json, results.md (the table and the run's conditions) and latency.png (latency against size) to
--out, by default reports/bench-recall/ (gitignored). Absolute numbers depend on the machine and on what else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from brain.db import Database
from brain.embeddings import HashingEmbedder
from brain.somamemory.schema import MIGRATIONS, SCHEMA
from brain.somamemory.store import Memory, MemoryStore
from localservers import corpus
from localservers.servers import ROOT, AppServer, PostgresServer

TENANT = "bench-recall"
TOP_K = 10
FILL_BATCH = 5_000
P95_TARGET_MS = 25.0
RECALL_TARGET = 0.95


@dataclass
class Measured:
    p50_ms: float
    p95_ms: float
    recall_at_10: float


@dataclass
class Point:
    memories: int
    insert_us: float  # bulk insert into Postgres, per memory (embedding included)
    catch_up_us: float  # the index's first recall after the fill, per memory added
    index_mib: float
    rss_mib: float
    index: Measured
    baseline: Measured | None = None


@dataclass
class Report:
    conditions: dict[str, Any]
    points: list[Point] = field(default_factory=list)
    cold_start_us: float | None = None  # per memory, at the largest size


def rss_mib(server: AppServer) -> float:
    assert server.process.proc is not None
    status = Path(f"/proc/{server.process.proc.pid}/status").read_text()
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return kib / 1024


def export_tree(ref: str, into: Path) -> Path:
    """The `brain` package of commit `ref`, as files under `into` (read-only git: nothing in the checkout changes)."""
    archive = into / "baseline.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), ref, "brain"], check=True)
    tree = into / "baseline"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def measure(client: httpx.Client, url: str, warm: list[str], timed: list[str], scores: np.ndarray,
            row: dict[str, int]) -> Measured:
    """Recall `warm` untimed, then `timed` (exact scores of every memory for each in `scores`, ids to rows in `row`)."""
    for query in warm:
        client.post(f"{url}/recall", json={"query": query, "top_k": TOP_K}).raise_for_status()
    latencies, recalls = [], []
    for i, query in enumerate(timed):
        started = time.perf_counter()
        response = client.post(f"{url}/recall", json={"query": query, "top_k": TOP_K})
        latencies.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        found = [row[r["id"]] for r in response.json()["results"]]
        recalls.append(corpus.recall_at_k(scores[i], found, TOP_K))
    cuts = statistics.quantiles(latencies, n=100)
    return Measured(round(statistics.median(latencies), 2), round(cuts[94], 2), round(float(np.mean(recalls)), 4))


def plot(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [p.memories for p in report.points]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(sizes, [p.index.p50_ms for p in report.points], "o-", color="tab:blue", label="index p50")
    ax.plot(sizes, [p.index.p95_ms for p in report.points], "o--", color="tab:blue", label="index p95")
    if all(p.baseline for p in report.points):
        ax.plot(sizes, [p.baseline.p50_ms for p in report.points if p.baseline], "s-", color="tab:red",
                label="scan p50")
        ax.plot(sizes, [p.baseline.p95_ms for p in report.points if p.baseline], "s--", color="tab:red",
                label="scan p95")
    ax.axhline(P95_TARGET_MS, color="grey", linestyle=":", label=f"p95 target {P95_TARGET_MS:g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("memories in the tenant")
    ax.set_ylabel("POST /recall latency (ms)")
    ax.set_title("SomaMemory recall latency against tenant size (top_k 10, 1 worker)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(report: Report) -> str:
    lines = [
        "| memories | scan p50 / p95 ms | scan recall@10 | index p50 / p95 ms | index recall@10 | insert us/memory "
        "| index catch-up us/memory | index MiB | service RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in report.points:
        base = (f"{p.baseline.p50_ms} / {p.baseline.p95_ms} | {p.baseline.recall_at_10}" if p.baseline else "- | -")
        lines.append(f"| {p.memories:,} | {base} | {p.index.p50_ms} / {p.index.p95_ms} | {p.index.recall_at_10} | "
                     f"{p.insert_us} | {p.catch_up_us} | {p.index_mib} | {p.rss_mib} |")
    if report.cold_start_us is not None:
        lines.append(f"\nCold start (rebuild from Postgres until ready) at {report.points[-1].memories:,} memories: "
                     f"{report.cold_start_us} us/memory.")
    return "\n".join(lines)


def verdict(report: Report) -> list[str]:
    first, last = report.points[0], report.points[-1]
    growth = last.index.p50_ms / first.index.p50_ms
    return [
        f"p95 at {last.memories:,}: {last.index.p95_ms} ms (target < {P95_TARGET_MS:g}): "
        f"{'met' if last.index.p95_ms < P95_TARGET_MS else 'MISSED'}",
        f"recall@10, worst point: {min(p.index.recall_at_10 for p in report.points)} (target >= {RECALL_TARGET}): "
        f"{'met' if all(p.index.recall_at_10 >= RECALL_TARGET for p in report.points) else 'MISSED'}",
        f"p50 grew {growth:.2f}x for {last.memories / first.memories:g}x the memories: "
        f"{'sublinear' if growth < last.memories / first.memories else 'NOT sublinear'}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="tenant sizes, ascending (default 1k,10k,100k)")
    parser.add_argument("--queries", type=int, default=100, help="timed recalls per point and service (default 100)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed recalls first (default 10)")
    parser.add_argument("--baseline", metavar="REF", help="also measure the SomaMemory of this commit")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench-recall", help="report directory")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    run = Path(tempfile.mkdtemp(prefix="somabrain-bench-recall-"))
    os.chmod(run, 0o755)
    args.out.mkdir(parents=True, exist_ok=True)
    conditions: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(), "usearch": version("usearch"), "top_k": TOP_K, "queries": args.queries,
        "workers": 1, "baseline": args.baseline, "load_average_start": os.getloadavg(),
        "checkout": subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                                   text=True).stdout.strip(),
    }
    print(f"==> Postgres and SomaMemory (logs in {run})", flush=True)
    pg = PostgresServer(run)
    pg.start()
    env = {"SOMABRAIN_POSTGRES_DSN": pg.dsn, "SOMABRAIN_LOG_LEVEL": "warning"}
    servers = {"index": AppServer("memory", env, run)}
    if args.baseline:
        servers["baseline"] = AppServer("memory", env, run, source=export_tree(args.baseline, run))
    runner = asyncio.Runner()
    db = Database(pg.dsn, SCHEMA, MIGRATIONS)
    embedder = HashingEmbedder()
    try:
        runner.run(db.connect())
        store = MemoryStore(db, embedder)
        for server in servers.values():
            server.start()
        if args.baseline:
            assert "recall_index" not in httpx.get(f"{servers['baseline'].url}/health").json()["components"], (
                f"{args.baseline} already has the index: pass the last commit that recalled by scanning")
        texts = corpus.memories(sizes[-1])
        ids = [uuid.uuid4().hex for _ in texts]
        matrix = np.stack([embedder.embed(t) for t in texts])
        report = Report(conditions)
        client = httpx.Client(headers={"X-Tenant-ID": TENANT}, timeout=120)
        filled = 0
        for size in sizes:
            print(f"==> filling to {size:,} memories", flush=True)
            started = time.perf_counter()
            for start in range(filled, size, FILL_BATCH):
                chunk = range(start, min(start + FILL_BATCH, size))
                runner.run(store.put_many(TENANT, [Memory(ids[i], texts[i], {"n": i}, 0.5) for i in chunk]))
            insert_us = (time.perf_counter() - started) / (size - filled) * 1e6
            started = time.perf_counter()
            client.post(f"{servers['index'].url}/recall", json={"query": "catch up", "top_k": TOP_K}).raise_for_status()
            catch_up_us = (time.perf_counter() - started) / (size - filled) * 1e6
            filled = size
            warm = corpus.queries(texts[:size], args.warmup, seed=size)
            timed = corpus.queries(texts[:size], args.queries)
            scores = np.stack([matrix[:size] @ embedder.embed(q) for q in timed])
            row = {item_id: i for i, item_id in enumerate(ids[:size])}
            measured = {}
            for name, server in servers.items():
                print(f"==> {name}: {len(timed)} recalls at {size:,}", flush=True)
                measured[name] = measure(client, server.url, warm, timed, scores, row)
            stats = httpx.get(f"{servers['index'].url}/health").json()["components"]["recall_index"]
            point = Point(size, round(insert_us, 1), round(catch_up_us, 1), round(stats["bytes"] / 2**20, 1),
                          round(rss_mib(servers["index"]), 1), measured["index"], measured.get("baseline"))
            report.points.append(point)
            print(f"    {asdict(point)}", flush=True)
        client.close()
        print(f"==> cold start at {filled:,} memories", flush=True)
        servers["index"].stop()
        started = time.perf_counter()
        servers["index"].start()
        report.cold_start_us = round((time.perf_counter() - started) / filled * 1e6, 1)
        conditions["load_average_end"] = os.getloadavg()
    finally:
        for server in servers.values():
            server.stop()
        runner.run(db.close())
        runner.close()
        pg.cleanup()
    (args.out / "results.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    summary = "\n".join([table(report), "", *(f"- {line}" for line in verdict(report)), "",
                         "Conditions: " + json.dumps(conditions)])
    (args.out / "results.md").write_text(summary + "\n")
    plot(report, args.out / "latency.png")
    print(summary)
    print(f"==> wrote {args.out}/results.json, results.md, latency.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
