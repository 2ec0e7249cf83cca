"""Group commit for audit events that carry no other change (e.g. /act): one statement per batch, not per request.

Callers `await write(event)` and are answered only once their batch has committed, so an acknowledged request
always has its event. Under concurrency the events that arrive while one batch commits form the next, so the
number of Postgres statements falls as load rises. The writer keeps the pool connection it commits on between
batches (releasing one back to an asyncpg pool costs a reset round trip, per batch) and gives it back when a
statement on it fails, so a broken connection is replaced by the pool, and when the writer stops.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from brain import tasks
from brain.audit.events import AuditEvent
from brain.audit.store import SCHEMA
from brain.db import DB_ERRORS, Database

log = logging.getLogger(__name__)


def _batch_sql(outbox: bool) -> str:
    events = (
        f'INSERT INTO "{SCHEMA}".audit_events (id, ts, tenant, subject, action, outcome, item_id, schema_version, '
        "count) SELECT * FROM unnest($1::text[], $2::text[]::timestamptz[], $3::text[], $4::text[], $5::text[], "
        "$6::text[], $7::text[], $8::int[], $9::int[])"
    )
    if not outbox:
        return events
    return (
        f"WITH e AS ({events}) "
        f'INSERT INTO "{SCHEMA}".outbox (event_id, topic, key, payload) '
        "SELECT id, $10, key, payload FROM unnest($1::text[], $3::text[], $11::text[]) AS t(id, key, payload)"
    )


class AuditWriter:
    def __init__(self, db: Database, topic: str | None, max_batch: int = 256) -> None:
        self._db = db
        self._topic = topic
        self._max_batch = max_batch
        self._sql = _batch_sql(topic is not None)
        self._pending: list[tuple[AuditEvent, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.pool.PoolConnectionProxy | None = None
        self.batches = 0

    def start(self) -> None:
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def stop(self) -> None:
        await tasks.cancel(self._task)
        self._task = None
        await self._release()
        pending, self._pending = self._pending, []
        for _, fut in pending:
            if not fut.done():
                fut.set_exception(RuntimeError("audit writer stopped"))

    async def write(self, event: AuditEvent) -> None:
        """Return once `event` is committed; raise what the commit raised (e.g. Postgres down)."""
        if self._task is None:
            raise RuntimeError("audit writer is not running")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((event, fut))
        self._wakeup.set()
        await fut

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            if not self._pending:
                self._wakeup.clear()
            try:
                await self._flush([event for event, _ in batch])
            except Exception as exc:  # every waiter learns the outcome; none hangs
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.batches += 1
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    async def _flush(self, events: list[AuditEvent]) -> None:
        args: list[object] = [
            [e.id for e in events], [e.ts for e in events], [e.tenant for e in events],
            [e.subject for e in events], [e.action for e in events], [e.outcome for e in events],
            [e.item_id for e in events], [e.schema_version for e in events], [e.count for e in events],
        ]
        if self._topic is not None:
            args += [self._topic, [e.to_json() for e in events]]
        if self._conn is None:
            self._conn = await self._db.pool.acquire()
        try:
            await self._conn.execute(self._sql, *args)
        except BaseException:
            await self._release()
            raise

    async def _release(self) -> None:
        """Give the held connection back; asyncpg resets it, or closes it when the reset fails (then says why)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await self._db.pool.release(conn)
        except DB_ERRORS as exc:
            log.warning("audit writer: a broken connection was closed (%s)", exc)
