"""Audit storage on a real Postgres: one-statement commits, group commit for index-less events."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest

from brain.audit import store
from brain.audit.events import AuditEvent
from brain.audit.writer import AuditWriter
from brain.db import DB_ERRORS, Database
from localservers.servers import PostgresServer


async def _db(dsn: str) -> Database:
    db = Database(dsn, store.SCHEMA, store.MIGRATIONS)
    await db.connect()
    return db


async def test_group_commit_writes_every_event_in_fewer_statements(postgres_server: PostgresServer,
                                                                  tenant: str) -> None:
    db = await _db(postgres_server.dsn)
    writer = AuditWriter(db, topic="soma.audit")
    writer.start()
    try:
        events = [AuditEvent(tenant=tenant, subject="s", action="act", outcome="ok") for _ in range(50)]
        await asyncio.gather(*(writer.write(e) for e in events))
        assert 0 < writer.batches < 50
        async with db.pool.acquire() as conn:
            stored = await conn.fetch("SELECT id FROM somabrain.audit_events WHERE tenant = $1", tenant)
            queued = await conn.fetch("SELECT event_id, key, payload FROM somabrain.outbox WHERE key = $1", tenant)
        assert {r["id"] for r in stored} == {e.id for e in events}
        assert {r["event_id"] for r in queued} == {e.id for e in events}
        assert all(f'"dedupe_key":"{r["event_id"]}"' in r["payload"] for r in queued)
    finally:
        await writer.stop()
        await db.close()


async def test_without_a_topic_no_outbox_row_is_left_waiting(postgres_server: PostgresServer, tenant: str) -> None:
    db = await _db(postgres_server.dsn)
    try:
        event = AuditEvent(tenant=tenant, subject="s", action="remember", outcome="ok", item_id=uuid.uuid4().hex)
        async with db.pool.acquire() as conn:
            await store.commit(conn, event, topic=None, index="remember")
            assert await conn.fetchval("SELECT count(*) FROM somabrain.outbox WHERE key = $1", tenant) == 0
            assert await conn.fetchval("SELECT count(*) FROM somabrain.memory_index WHERE id = $1", event.item_id) == 1
            gone = AuditEvent(tenant=tenant, subject="s", action="delete", outcome="ok", item_id=event.item_id)
            await store.commit(conn, gone, topic="soma.audit", index="delete")
            row = await conn.fetchrow("SELECT deleted_at FROM somabrain.memory_index WHERE id = $1", event.item_id)
            assert row["deleted_at"] is not None
            assert await conn.fetchval("SELECT count(*) FROM somabrain.outbox WHERE event_id = $1", gone.id) == 1
    finally:
        await db.close()


async def test_a_failed_batch_fails_its_writers(run_dir: Path, tenant: str) -> None:
    pg = PostgresServer(run_dir)
    pg.start()
    db = await _db(pg.dsn)
    writer = AuditWriter(db, topic=None)
    writer.start()
    try:
        pg.stop()
        results = await asyncio.gather(
            *(writer.write(AuditEvent(tenant=tenant, subject="s", action="act", outcome="ok")) for _ in range(3)),
            return_exceptions=True,
        )
        assert all(isinstance(r, DB_ERRORS) for r in results), results  # what the API answers as 503
    finally:
        await writer.stop()
        await db.close()
        pg.cleanup()


@pytest.mark.parametrize("index", [None, "remember", "delete"])
async def test_commit_is_one_atomic_statement(postgres_server: PostgresServer, tenant: str,
                                              index: store.Index | None) -> None:
    """A statement that fails part-way (duplicate event id) leaves nothing of itself behind."""
    db = await _db(postgres_server.dsn)
    try:
        event = AuditEvent(tenant=tenant, subject="s", action="x", outcome="ok", item_id=uuid.uuid4().hex)
        async with db.pool.acquire() as conn:
            await store.commit(conn, event, topic="soma.audit")
            before = await conn.fetchval("SELECT count(*) FROM somabrain.memory_index WHERE tenant = $1", tenant)
            with pytest.raises(asyncpg.UniqueViolationError):
                await store.commit(conn, event, topic="soma.audit", index=index)
            after = await conn.fetchval("SELECT count(*) FROM somabrain.memory_index WHERE tenant = $1", tenant)
            assert after == before
    finally:
        await db.close()


async def test_the_writer_commits_on_one_connection_and_replaces_it_after_a_restart(run_dir: Path,
                                                                                  tenant: str) -> None:
    """Batches reuse the connection the writer holds (one backend for all of them); when Postgres restarts, the
    batch on the broken connection fails and the next one commits on a fresh connection from the pool.

    pg_stat_activity tells the two apart: a connection released to the pool shows the pool's reset as its last
    query, so only a connection the writer still holds shows the audit INSERT (a writer that released after every
    batch shows none)."""
    pg = PostgresServer(run_dir)
    pg.start()
    db = await _db(pg.dsn)
    writer = AuditWriter(db, topic=None)
    writer.start()

    async def write(n: int) -> list[object]:
        return await asyncio.gather(
            *(writer.write(AuditEvent(tenant=tenant, subject="s", action="act", outcome="ok")) for _ in range(n)),
            return_exceptions=True)

    try:
        for _ in range(3):
            assert await write(5) == [None] * 5
        async with db.pool.acquire() as conn:
            backends = await conn.fetchval(
                "SELECT count(DISTINCT pid) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO \"somabrain\".audit%'")
        assert backends == 1
        pg.stop()
        pg.start()
        failed = await write(2)
        assert all(isinstance(r, DB_ERRORS) for r in failed), failed
        assert await write(3) == [None] * 3
        async with db.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM somabrain.audit_events WHERE tenant = $1", tenant) == 18
    finally:
        await writer.stop()
        await db.close()
        pg.cleanup()
