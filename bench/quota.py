"""Quota benchmark, run by hand (`make bench-quota`), never in CI: a tenant at its SomaMemory quota, hammering writes
that are refused, beside another tenant whose recall is measured in the same run.

One Postgres and one `somabrain memory` process (one worker, SOMABRAIN_MEMORY_QUOTA_ITEMS=--quota). Tenant `full` is
bulk-filled to the quota, tenant `other` to --other memories (seeded corpus, localservers/corpus.py). Then
`other`'s POST /recall (top_k 10, --queries queries, one at a time), p50/p95 and the ids returned:
1. alone;
2. while --writers concurrent clients write new memories to tenant `roomy`, far from its quota (each 201);
3. while they write to `full` instead (each must be 403 quota_exceeded).
The same ids in every phase is correctness; phase 3 against phase 2 is what a tenant at its quota costs the others
beyond what any writer costs them.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from brain.db import Database
from brain.embeddings import HashingEmbedder
from brain.somamemory.schema import MIGRATIONS, SCHEMA
from brain.somamemory.store import Memory, MemoryStore
from localservers import corpus
from localservers.servers import AppServer, PostgresServer, memory_headers


async def fill(dsn: str, tenant: str, count: int) -> None:
    db = Database(dsn, SCHEMA, MIGRATIONS)
    await db.connect()
    store = MemoryStore(db, HashingEmbedder(256))
    texts = corpus.memories(count, seed=sum(map(ord, tenant)))
    for start in range(0, count, 5_000):
        await store.put_many(tenant, [Memory(uuid.uuid4().hex, t, {}, 0.5) for t in texts[start:start + 5_000]])
    await db.close()


async def recall_all(client: httpx.AsyncClient, queries: list[str]) -> tuple[list[float], list[list[str]]]:
    times, ids = [], []
    for query in queries:
        started = time.perf_counter()
        answer = await client.post("/recall", json={"query": query, "top_k": 10}, headers=memory_headers("other"))
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, answer.text
        ids.append([r["id"] for r in answer.json()["results"]])
    return times, ids


async def hammer(url: str, tenant: str, expect: int, stop: asyncio.Event, done: list[int]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while not stop.is_set():
            answer = await client.post("/remember", json={"content": f"write {uuid.uuid4().hex}"},
                                       headers=memory_headers(tenant))
            assert answer.status_code == expect, answer.text
            done.append(1)


async def beside_writers(url: str, client: httpx.AsyncClient, queries: list[str], tenant: str, expect: int,
                         writers: int) -> tuple[list[float], list[list[str]], float]:
    """`other`'s recall while `writers` clients write to `tenant`, each answer `expect`: (times, ids, writes/s)."""
    stop, done = asyncio.Event(), list[int]()
    tasks = [asyncio.create_task(hammer(url, tenant, expect, stop, done)) for _ in range(writers)]
    started = time.perf_counter()
    times, ids = await recall_all(client, queries)
    rate = len(done) / (time.perf_counter() - started)
    stop.set()
    await asyncio.gather(*tasks)
    return times, ids, rate


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1]


async def main(args: argparse.Namespace) -> None:
    run = Path(tempfile.mkdtemp(prefix="sb-bench-quota-"))
    pg = PostgresServer(run)
    pg.start()
    try:
        print(f"==> filling: full {args.quota} (its quota), other {args.other}", flush=True)
        await fill(pg.dsn, "full", args.quota)
        await fill(pg.dsn, "other", args.other)
        server = AppServer("memory", {"SOMABRAIN_POSTGRES_DSN": pg.dsn,
                                      "SOMABRAIN_MEMORY_QUOTA_ITEMS": str(args.quota)}, run)
        server.start()
        try:
            queries = corpus.queries(corpus.memories(args.other, seed=sum(map(ord, "other"))), args.queries)
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                await recall_all(client, queries[:20])  # warm-up
                alone, ids_alone = await recall_all(client, queries)
                # Writes that are stored (a tenant far from its quota), then writes refused at the quota.
                stored, ids_stored, stored_rate = await beside_writers(server.url, client, queries, "roomy", 201,
                                                                       args.writers)
                refused, ids_refused, refused_rate = await beside_writers(server.url, client, queries, "full", 403,
                                                                          args.writers)
        finally:
            server.stop()
    finally:
        pg.cleanup()
    print(f"\nother's recall ({args.other} memories, {args.queries} queries, top_k 10), one SomaMemory worker:")
    print("| phase | p50 ms | p95 ms | other's results |\n|---|---|---|---|")
    for name, times, ids in (("alone", alone, ids_alone),
                             (f"beside {args.writers} writers, stored ({stored_rate:.0f}/s)", stored, ids_stored),
                             (f"beside {args.writers} writers, refused at the quota ({refused_rate:.0f}/s)", refused,
                              ids_refused)):
        print(f"| {name} | {statistics.median(times):.2f} | {pct(times, 95):.2f} | "
              f"{'same as alone' if ids == ids_alone else 'DIFFER'} |")
    print(f"p50 ratio, refused writers / stored writers: {statistics.median(refused) / statistics.median(stored):.2f}")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quota", type=int, default=10_000, help="full's quota, which it is filled to (10000)")
    parser.add_argument("--other", type=int, default=10_000, help="memories of the measured tenant (10000)")
    parser.add_argument("--queries", type=int, default=200, help="recall queries per phase (200)")
    parser.add_argument("--writers", type=int, default=4, help="concurrent refused writers (4)")
    asyncio.run(main(parser.parse_args()))
