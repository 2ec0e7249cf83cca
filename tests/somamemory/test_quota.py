"""SomaMemory's per-tenant quota (memories and bytes) on a real Postgres and a real SomaMemory process.

Before the quota, one tenant could fill SomaMemory (and its Postgres) for everyone: nothing bounded what a tenant
held. The usage counters are kept by triggers (schema.py, migration 4), so they must equal the rows whatever wrote
them; the check holds the tenant's counter lock, so concurrent writes cannot overshoot.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from brain.db import Database
from brain.embeddings import HashingEmbedder
from brain.somamemory.schema import MIGRATIONS, SCHEMA
from brain.somamemory.store import Memory, MemoryStore, Quota, QuotaExceeded, Written
from localservers.servers import AppServer, PostgresServer, memory_headers

pytestmark = pytest.mark.integration
EMBED = HashingEmbedder(256)


@pytest.fixture
async def db(module_postgres: PostgresServer) -> AsyncIterator[Database]:
    database = Database(module_postgres.dsn, SCHEMA, MIGRATIONS)
    await database.connect()
    yield database
    await database.close()


def tenant_name() -> str:
    return "q-" + uuid.uuid4().hex[:10]


async def counted_and_actual(db: Database, tenant: str) -> tuple[tuple[int, int], tuple[int, int]]:
    async with db.pool.acquire() as conn:
        actual = await conn.fetchrow(
            f'SELECT count(*) AS items, coalesce(sum("{SCHEMA}".memory_bytes(content, metadata, embedding)), 0) '  # noqa: S608
            f'AS bytes FROM "{SCHEMA}".memories WHERE tenant = $1', tenant)
    return await MemoryStore(db, EMBED).usage(tenant), (int(actual["items"]), int(actual["bytes"]))


async def test_the_item_quota_refuses_the_next_memory_and_stores_nothing(db: Database) -> None:
    tenant, store = tenant_name(), MemoryStore(db, EMBED, Quota(items=3, bytes=10**9))
    ids = [uuid.uuid4().hex for _ in range(4)]
    for item_id in ids[:3]:
        assert await store.put(tenant, item_id, f"memory {item_id}", {}, 0.5) is Written.CREATED
    with pytest.raises(QuotaExceeded, match="quota of 3 memories") as refused:
        await store.put(tenant, ids[3], "one too many", {}, 0.5)
    assert refused.value.crossed == "items"
    # A retry of a memory already stored is not a new one: at the quota it still converges.
    assert await store.put(tenant, ids[0], f"memory {ids[0]}", {}, 0.5) is Written.EXISTED
    counted, actual = await counted_and_actual(db, tenant)
    assert counted == actual and counted[0] == 3
    assert await store.delete(tenant, ids[1])  # room again
    assert await store.put(tenant, ids[3], "one too many", {}, 0.5) is Written.CREATED


async def test_the_byte_quota_counts_content_metadata_and_embedding(db: Database) -> None:
    tenant = tenant_name()
    store = MemoryStore(db, EMBED, Quota(items=100, bytes=12_000))
    await store.put(tenant, uuid.uuid4().hex, "x" * 4_000, {"k": "v"}, 0.5)
    used = (await store.usage(tenant))[1]
    assert used == 4_000 + len(json.dumps({"k": "v"})) + 4 * EMBED.dim  # the embedding is float32
    with pytest.raises(QuotaExceeded, match="12000 bytes") as refused:
        await store.put(tenant, uuid.uuid4().hex, "y" * 8_000, {}, 0.5)
    assert refused.value.crossed == "bytes" and (await store.usage(tenant))[1] == used


async def test_concurrent_writes_of_one_tenant_do_not_overshoot(db: Database) -> None:
    tenant, store = tenant_name(), MemoryStore(db, EMBED, Quota(items=10, bytes=10**9))
    results = await asyncio.gather(*(store.put(tenant, uuid.uuid4().hex, f"w{i}", {}, 0.5) for i in range(25)),
                                   return_exceptions=True)
    assert sum(r is Written.CREATED for r in results) == 10
    assert all(isinstance(r, QuotaExceeded) for r in results if r is not Written.CREATED)
    counted, actual = await counted_and_actual(db, tenant)
    assert counted == actual == (10, actual[1])


async def test_the_counters_follow_every_kind_of_write(db: Database) -> None:
    """Bulk inserts and replacements (put_many), deletes by the store and by hand-written SQL: the triggers count
    each, so the counters equal the rows."""
    tenant, store = tenant_name(), MemoryStore(db, EMBED)
    ids = [uuid.uuid4().hex for _ in range(6)]
    await store.put_many(tenant, [Memory(i, f"first {i}", {}, 0.5) for i in ids])
    await store.put_many(tenant, [Memory(ids[0], "replaced with a much longer text " * 20, {"a": 1}, 0.5)])
    await store.delete(tenant, ids[1])
    async with db.pool.acquire() as conn:
        await conn.execute(f'DELETE FROM "{SCHEMA}".memories WHERE tenant = $1 AND id = ANY($2::text[])',  # noqa: S608
                           tenant, ids[2:4])
        await conn.execute(f'UPDATE "{SCHEMA}".memories SET content = content || $2 WHERE tenant = $1',  # noqa: S608
                           tenant, "!")
    counted, actual = await counted_and_actual(db, tenant)
    assert counted == actual and counted[0] == 3


async def test_migration_4_counts_what_is_already_there(module_postgres: PostgresServer) -> None:
    """A database at migration 3 with memories: migration 4 backfills the counters from the rows."""
    schema = "somamemory"
    async with asyncpg.create_pool(module_postgres.dsn, min_size=1, max_size=1) as pool, pool.acquire() as conn:
        await conn.execute("CREATE DATABASE quota_backfill")
    dsn = module_postgres.dsn.rsplit("/", 1)[0] + "/quota_backfill"
    old = Database(dsn, schema, MIGRATIONS[:3])
    await old.connect()
    tenant = tenant_name()
    await MemoryStore(old, EMBED).put_many(tenant, [Memory(uuid.uuid4().hex, f"m{i}", {}, 0.5) for i in range(7)])
    await old.close()
    new = Database(dsn, schema, MIGRATIONS)
    await new.connect()
    try:
        counted, actual = await counted_and_actual(new, tenant)
        assert counted == actual and counted[0] == 7
    finally:
        await new.close()


@pytest.fixture
def small_quota_memory(module_postgres: PostgresServer, run_dir: Path) -> Iterator[AppServer]:
    server = AppServer("memory", {"SOMABRAIN_POSTGRES_DSN": module_postgres.dsn, "SOMABRAIN_MEMORY_QUOTA_ITEMS": "5"},
                       run_dir)
    server.start()
    yield server
    server.stop()


def test_a_tenant_at_its_quota_gets_403_and_another_tenant_is_unaffected(small_quota_memory: AppServer) -> None:
    url, full, other = small_quota_memory.url, tenant_name(), tenant_name()
    for i in range(5):
        assert httpx.post(f"{url}/remember", json={"content": f"full tenant memory {i}"},
                          headers=memory_headers(full)).status_code == 201
    refused = httpx.post(f"{url}/remember", json={"content": "over"}, headers=memory_headers(full))
    assert refused.status_code == 403 and refused.json()["error"] == "quota_exceeded", refused.text
    assert "quota of 5 memories" in refused.json()["detail"]
    stored = httpx.post(f"{url}/remember", json={"content": "the other tenant's lighthouse"},
                        headers=memory_headers(other))
    assert stored.status_code == 201
    found = httpx.post(f"{url}/recall", json={"query": "lighthouse", "top_k": 3}, headers=memory_headers(other))
    assert [r["id"] for r in found.json()["results"]] == [stored.json()["id"]]
    # The full tenant still reads everything it holds.
    assert len(httpx.post(f"{url}/recall", json={"query": "full tenant memory", "top_k": 10},
                          headers=memory_headers(full)).json()["results"]) == 5
