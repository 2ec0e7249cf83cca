"""MemoryStore in-process on a real Postgres: recall through the index equals exact search, at any age and size,
and stays right across restarts, replicas, deletes, overwrites, older writers and tenants.

The big corpora live in a Postgres of this module's own, so the session's SomaMemory processes, which build every
tenant's index when they start, stay quick to start.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from brain.db import Database
from brain.embeddings import HashingEmbedder
from brain.somamemory.index import EXACT_SEARCH_MAX
from brain.somamemory.schema import MIGRATIONS, SCHEMA
from brain.somamemory.store import IdempotencyConflict, Memory, MemoryStore, Written
from localservers import corpus
from localservers.servers import PostgresServer

pytestmark = pytest.mark.integration
EMBED = HashingEmbedder(256)
OpenStore = Callable[[], Awaitable[MemoryStore]]


@pytest.fixture(scope="module")
def pg(run_dir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(run_dir)
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
async def open_store(pg: PostgresServer) -> AsyncIterator[OpenStore]:
    """Opens a store as a new SomaMemory worker would: its own pool, an empty index (each call: another replica)."""
    dbs: list[Database] = []

    async def open_one() -> MemoryStore:
        db = Database(pg.dsn, SCHEMA, MIGRATIONS)
        await db.connect()
        dbs.append(db)
        return MemoryStore(db, EMBED)

    yield open_one
    for db in dbs:
        await db.close()


def new_id() -> str:
    return uuid.uuid4().hex


async def fill(store: MemoryStore, tenant: str, texts: list[str], batch: int = 5_000) -> list[str]:
    ids = [new_id() for _ in texts]
    for start in range(0, len(texts), batch):
        chunk = range(start, min(start + batch, len(texts)))
        await store.put_many(tenant, [Memory(ids[i], texts[i], {"n": i}, 0.5) for i in chunk])
    return ids


async def recall_ids(store: MemoryStore, tenant: str, query: str, top_k: int = 10) -> list[str]:
    return [r.id for r in await store.recall(tenant, query, top_k)]


async def mean_recall_at_10(store: MemoryStore, tenant: str, texts: list[str], ids: list[str], n: int) -> float:
    matrix = np.stack([EMBED.embed(t) for t in texts])
    row = {item_id: i for i, item_id in enumerate(ids)}
    found = []
    for query in corpus.queries(texts, n):
        results = await store.recall(tenant, query, 10)
        scores = matrix @ EMBED.embed(query)
        for r in results:  # each score is the exact one, and results come best first
            assert r.score == pytest.approx(float(scores[row[r.id]]), abs=1e-5)
        assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
        found.append(corpus.recall_at_k(scores, [row[r.id] for r in results], 10))
    return float(np.mean(found))


async def test_small_tenant_recall_is_exact_search(open_store: OpenStore, tenant: str) -> None:
    store = await open_store()
    texts = corpus.memories(EXACT_SEARCH_MAX // 2, seed=11)
    ids = await fill(store, tenant, texts)
    assert await mean_recall_at_10(store, tenant, texts, ids, 50) == 1.0


@pytest.mark.slow
async def test_memories_older_than_50000_newer_ones_are_recalled(open_store: OpenStore, tenant: str) -> None:
    """The scan this index replaced read only a tenant's newest 50,000 memories; the graph holds them all, and
    recall@10 against exact search over the whole tenant stays at or above 0.95."""
    store = await open_store()
    oldest = {new_id(): "the brass key to the observatory hangs behind the boiler",
              new_id(): "grandmother kept the sourdough starter in a blue crock"}
    await store.put_many(tenant, [Memory(i, text, {}, 0.5) for i, text in oldest.items()])
    texts = corpus.memories(50_000, seed=12)
    ids = await fill(store, tenant, texts)
    for item_id, text in oldest.items():
        best = (await store.recall(tenant, text, 1))[0]
        assert (best.id, best.score) == (item_id, pytest.approx(1.0))
    assert await mean_recall_at_10(store, tenant, texts, ids, 40) >= 0.95


async def test_a_delete_is_honoured_at_once_by_every_replica(open_store: OpenStore, pg: PostgresServer,
                                                           tenant: str) -> None:
    one, other = await open_store(), await open_store()
    doomed, hidden, kept = new_id(), new_id(), new_id()
    await one.put_many(tenant, [Memory(doomed, "the spare tyre is flat", {}, 0.5),
                                Memory(hidden, "the spare battery is charged", {}, 0.5),
                                Memory(kept, "the spare keys are in the drawer", {}, 0.5)])
    assert set(await recall_ids(other, tenant, "spare")) == {doomed, hidden, kept}

    assert await one.delete(tenant, doomed)
    assert set(await recall_ids(other, tenant, "spare")) == {hidden, kept}
    assert not await other.delete(tenant, doomed)

    # Deleted behind the change feed's back (no trigger, so no tombstone): `other` cannot learn of it, and its
    # index still holds the vector, yet rescoring against Postgres never returns it.
    conn = await asyncpg.connect(pg.dsn)
    try:
        await conn.execute("SET session_replication_role = replica")
        await conn.execute("DELETE FROM somamemory.memories WHERE tenant = $1 AND id = $2", tenant, hidden)
    finally:
        await conn.close()
    assert await recall_ids(other, tenant, "spare") == [kept]
    assert other.index.stats().vectors >= 2


async def test_a_key_handed_out_again_can_be_deleted(open_store: OpenStore, pg: PostgresServer,
                                                   tenant: str) -> None:
    """After `migrate import` brings tombstones ahead of the target's key sequence, a new memory can get a key a
    tombstone already holds; its delete must still succeed (it failed on the tombstone's primary key: a 503 in the
    cluster's load run) and reach every replica."""
    one, other = await open_store(), await open_store()
    first, second, kept = new_id(), new_id(), new_id()
    await one.put_many(tenant, [Memory(kept, "the kettle is on the stove", {}, 0.5)])
    await one.put(tenant, first, "the kettle whistles at dawn", {}, 0.5)
    conn = await asyncpg.connect(pg.dsn)
    try:
        key = await conn.fetchval("SELECT key FROM somamemory.memories WHERE id = $1", first)
        assert await one.delete(tenant, first)
        # what an import leaves: the sequence behind a tombstone's key
        await conn.execute("SELECT setval(pg_get_serial_sequence('somamemory.memories', 'key'), $1, false)", key)
        await one.put(tenant, second, "the kettle whistles at dusk", {}, 0.5)
        assert await conn.fetchval("SELECT key FROM somamemory.memories WHERE id = $1", second) == key
        assert set(await recall_ids(other, tenant, "kettle")) == {kept, second}
        assert await one.delete(tenant, second)
    finally:
        await conn.close()
    assert await recall_ids(other, tenant, "kettle") == [kept]
    assert await recall_ids(await open_store(), tenant, "kettle") == [kept]


async def test_a_restarted_store_recalls_everything(open_store: OpenStore, tenant: str) -> None:
    texts = [f"{text} {i}" for i, text in enumerate(corpus.memories(300, seed=13))]
    ids = await fill(await open_store(), tenant, texts)
    restarted = await open_store()
    await restarted.warm_up()
    assert restarted.warm
    for item_id, text in zip(ids, texts, strict=True):
        best = (await restarted.recall(tenant, text, 1))[0]
        assert (best.id, best.score) == (item_id, pytest.approx(1.0))


async def test_replicas_see_each_others_writes_overwrites_and_deletes(open_store: OpenStore, tenant: str) -> None:
    a, b = await open_store(), await open_store()
    item = new_id()
    await a.put(tenant, item, "the meeting moved to thursday", {"v": 1}, 0.5)
    assert await recall_ids(b, tenant, "meeting thursday") == [item]

    # same id through the bulk path (put never replaces): replaced, everywhere
    await b.put_many(tenant, [Memory(item, "the invoice is overdue", {"v": 2}, 0.7)])
    found = await a.recall(tenant, "invoice overdue", 5)
    assert [(r.id, r.content, r.metadata, r.importance) for r in found] == [
        (item, "the invoice is overdue", {"v": 2}, 0.7)]
    assert found[0].score == pytest.approx(1.0)
    assert (await b.recall(tenant, "meeting thursday", 5))[0].score < 0.5

    assert await a.delete(tenant, item)
    assert await recall_ids(b, tenant, "invoice overdue") == []
    await a.put(tenant, item, "the invoice is paid", {}, 0.5)  # a deleted id may come back, with a new key
    assert await recall_ids(b, tenant, "invoice paid") == [item]


async def test_put_never_replaces_a_memory(open_store: OpenStore, pg: PostgresServer, tenant: str) -> None:
    """The same id with the same memory is a retry (EXISTED, found by a read: no change number taken); with any
    other content, metadata or importance it is refused and the stored memory stays as it was."""
    store = await open_store()
    item = new_id()
    assert await store.put(tenant, item, "the gate code is 4711", {"site": "north", "n": 1}, 0.5) is Written.CREATED
    conn = await asyncpg.connect(pg.dsn)
    try:
        seq = await conn.fetchval("SELECT last_seq FROM somamemory.tenant_changes WHERE tenant = $1", tenant)
        # jsonb equality: key order and 1 vs 1.0 do not make another memory
        assert await store.put(tenant, item, "the gate code is 4711", {"n": 1.0, "site": "north"},
                               0.5) is Written.EXISTED
        assert await conn.fetchval("SELECT last_seq FROM somamemory.tenant_changes WHERE tenant = $1", tenant) == seq
    finally:
        await conn.close()
    for content, metadata, importance in [("the gate code is 1234", {"site": "north", "n": 1}, 0.5),
                                          ("the gate code is 4711", {"site": "south", "n": 1}, 0.5),
                                          ("the gate code is 4711", {"site": "north", "n": 1}, 0.9)]:
        with pytest.raises(IdempotencyConflict):
            await store.put(tenant, item, content, metadata, importance)
    found = await store.recall(tenant, "gate code", 5)
    assert [(r.id, r.content, r.metadata, r.importance) for r in found] == [
        (item, "the gate code is 4711", {"site": "north", "n": 1}, 0.5)]
    assert await store.delete(tenant, item)
    assert await store.put(tenant, item, "the gate code is 1234", {}, 0.5) is Written.CREATED  # a deleted id is free


async def test_concurrent_identical_puts_store_one_memory(open_store: OpenStore, tenant: str) -> None:
    """Retries racing each other on two replicas: one creates, the others find it; one row, whatever the order."""
    a, b = await open_store(), await open_store()
    item = new_id()
    outcomes = await asyncio.gather(*(store.put(tenant, item, "the ferry leaves at nine", {}, 0.5)
                                      for store in (a, b) * 4))
    assert sorted(o.value for o in outcomes) == ["created"] + ["existed"] * 7
    assert await recall_ids(a, tenant, "ferry nine") == [item]


async def test_a_batch_with_a_repeated_id_keeps_the_last(open_store: OpenStore, tenant: str) -> None:
    store = await open_store()
    item = new_id()
    await store.put_many(tenant, [Memory(item, "the first draft", {}, 0.5), Memory(item, "the final copy", {}, 0.6)])
    found = await store.recall(tenant, "draft copy", 10)
    assert [(r.id, r.content, r.importance) for r in found] == [(item, "the final copy", 0.6)]


async def test_concurrent_writers_on_two_replicas_miss_nothing(open_store: OpenStore, tenant: str) -> None:
    """Writes committing in any interleaving while a third replica catches up: its index ends with every one."""
    a, b, reader = await open_store(), await open_store(), await open_store()
    texts = corpus.memories(400, seed=14)

    async def write(store: MemoryStore, part: list[str]) -> None:
        for text in part:
            await store.put(tenant, new_id(), text, {}, 0.5)

    async def read() -> None:
        for query in corpus.queries(texts, 40):
            await reader.recall(tenant, query, 10)

    await asyncio.gather(write(a, texts[::2]), write(b, texts[1::2]), read())
    await reader.recall(tenant, "anything", 1)
    assert reader.index.stats().vectors == len(texts)


async def test_writes_without_a_change_number_reach_the_index(open_store: OpenStore, pg: PostgresServer,
                                                             tenant: str) -> None:
    """An older release mid-rollout, or hand-written SQL, writes rows without `seq`: the trigger stamps one, after
    every change number a replica has read, and any DELETE leaves tombstones."""
    store = await open_store()
    await store.put(tenant, new_id(), "the harbour master's log", {}, 0.5)
    assert len(await recall_ids(store, tenant, "harbour")) == 1
    item = new_id()
    # The statement the scan-era store ran, for a new id and then for the same id again.
    old_put = (
        "INSERT INTO somamemory.memories (tenant, id, content, metadata, importance, embedding) "
        "VALUES ($1, $2, $3, '{}'::jsonb, 0.5, $4) ON CONFLICT (tenant, id) DO UPDATE "
        "SET content = EXCLUDED.content, embedding = EXCLUDED.embedding"
    )
    conn = await asyncpg.connect(pg.dsn)
    try:
        for text in ("the lighthouse keeper retired", "the ferry timetable changed"):
            await conn.execute(old_put, tenant, item, text, EMBED.embed(text).astype("<f4").tobytes())
            assert (await recall_ids(store, tenant, text, 1)) == [item]
        await conn.execute("DELETE FROM somamemory.memories WHERE tenant = $1", tenant)
    finally:
        await conn.close()
    assert await recall_ids(store, tenant, "ferry timetable") == []
    assert store.index.stats().vectors == 0


async def test_tenants_are_isolated(open_store: OpenStore, tenant: str) -> None:
    store = await open_store()
    other = tenant + "-b"
    mine, theirs = new_id(), new_id()
    await store.put(tenant, mine, "the shared secret phrase", {}, 0.5)
    await store.put(other, theirs, "the shared secret phrase", {}, 0.5)
    assert await recall_ids(store, tenant, "shared secret phrase") == [mine]
    assert await recall_ids(store, other, "shared secret phrase") == [theirs]
    assert not await store.delete(other, mine)
    assert await store.delete(other, theirs)
    assert await recall_ids(store, tenant, "shared secret phrase") == [mine]
    assert await recall_ids(store, tenant + "-never-wrote", "shared secret phrase") == []


async def test_an_existing_database_is_migrated_and_recalled(pg: PostgresServer, tenant: str) -> None:
    """Rows written before the change feed existed (schema version 1) are in the index after the upgrade."""
    admin = await asyncpg.connect(pg.dsn)
    await admin.execute("CREATE DATABASE upgraded")
    await admin.close()
    dsn = pg.dsn.rsplit("/", 1)[0] + "/upgraded"
    old = Database(dsn, SCHEMA, MIGRATIONS[:1])
    await old.connect()
    item = new_id()
    async with old.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO somamemory.memories (tenant, id, content, metadata, importance, embedding) "
            "VALUES ($1, $2, $3, '{}'::jsonb, 0.5, $4)", tenant, item, "written before the upgrade",
            EMBED.embed("written before the upgrade").astype("<f4").tobytes(),
        )
    await old.close()
    new = Database(dsn, SCHEMA, MIGRATIONS)
    await new.connect()
    try:
        store = MemoryStore(new, EMBED)
        await store.warm_up()
        assert store.index.stats().vectors == 1
        assert await recall_ids(store, tenant, "before the upgrade") == [item]
    finally:
        await new.close()
