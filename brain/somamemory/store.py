"""SomaMemory's Postgres store: one row per memory (embedding as float32 bytes), recalled through a vector index.

Recall asks this worker's index of the tenant (brain/somamemory/index.py, caught up with Postgres first) for
candidates, then reads only their embeddings from Postgres, scores them exactly, and reads content and metadata for
the top k alone, both in one snapshot. Rows the index still holds but Postgres no longer does (deleted by another
replica a moment ago, or behind the change feed's back) are simply not found, so they are never returned.

A write (`put`) stores a memory under the caller's id unless the id is taken, and never replaces one: the same id
with the same memory is a retry of a write already done (it reads, and writes nothing), the same id with another
memory is an `IdempotencyConflict`. So a caller that lost an answer can send the same write again and converge. A
failure once the INSERT is on its way to Postgres, with no verdict back (a timeout, a connection lost, the server
shutting down), is a `WriteInDoubt`: Postgres may have committed it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import asyncpg
import numpy as np

from brain.db import DB_ERRORS, Database
from brain.embeddings import HashingEmbedder, cosine_scores, matrix_from_bytes, to_bytes
from brain.somamemory.index import ChangePage, Cursor, RecallIndex
from brain.somamemory.schema import SCHEMA

log = logging.getLogger(__name__)

#: Candidates asked of the index per result wanted, and at least this many: rescoring that many exactly is cheap,
#: and it is what lets an approximate index give exact top-k results.
CANDIDATES_PER_RESULT = 5
MIN_CANDIDATES = 50
#: Pause between warm-up attempts while Postgres cannot be reached.
WARM_UP_RETRY_S = 1.0

_PUT = f"""
WITH change AS (SELECT "{SCHEMA}".next_seq($1) AS seq)
INSERT INTO "{SCHEMA}".memories (tenant, id, content, metadata, importance, embedding, seq)
SELECT $1, m.id, m.content, m.metadata, m.importance, m.embedding, change.seq
FROM unnest($2::text[], $3::text[], $4::jsonb[], $5::float8[], $6::bytea[])
    AS m (id, content, metadata, importance, embedding)
CROSS JOIN change
ON CONFLICT (tenant, id) DO UPDATE
SET content = EXCLUDED.content, metadata = EXCLUDED.metadata, importance = EXCLUDED.importance,
    embedding = EXCLUDED.embedding, seq = EXCLUDED.seq
"""

# One memory, unless its id is taken (then no row comes back). The change number is taken first, as in _PUT.
_INSERT = f"""
WITH change AS (SELECT "{SCHEMA}".next_seq($1) AS seq)
INSERT INTO "{SCHEMA}".memories (tenant, id, content, metadata, importance, embedding, seq)
SELECT $1, $2, $3, $4::jsonb, $5, $6, change.seq FROM change
ON CONFLICT (tenant, id) DO NOTHING
RETURNING id
"""
# The tenant's usage under its counter row's lock (the lock next_seq() takes; schema.py, migration 4), and which
# bound the memory given would cross: NULL when it fits. `_within_quota` makes sure the row exists first.
_QUOTA = f"""
SELECT CASE WHEN u.items + 1 > $5 THEN 'items'
            WHEN u.bytes + "{SCHEMA}".memory_bytes($2, $3::jsonb, $4) > $6 THEN 'bytes' END AS crossed,
       u.items, u.bytes, "{SCHEMA}".memory_bytes($2, $3::jsonb, $4) AS size
FROM (SELECT coalesce(max(items), 0) AS items, coalesce(max(bytes), 0) AS bytes
      FROM (SELECT items, bytes FROM "{SCHEMA}".tenant_changes WHERE tenant = $1 FOR UPDATE) AS locked) AS u
"""
# Whether the memory stored under an id is the one given (NULL: none is). jsonb equality ignores key order.
_SAME = f"""
SELECT content = $3 AND metadata = $4::jsonb AND importance = $5
FROM "{SCHEMA}".memories WHERE tenant = $1 AND id = $2
"""
#: SQLSTATEs after which a statement's outcome is unknown: the connection failed (08), the server was shut down or
#: the statement cancelled (57: a commit waiting for a synchronous standby has already committed locally when it is
#: interrupted), or Postgres says so itself (40003). Any other error from Postgres is its verdict: rolled back.
_IN_DOUBT_CLASSES = ("08", "57")
_IN_DOUBT_STATES = ("40003",)

# Both sides are read by (tenant, seq, key) indexes, in feed order; keys of live rows and of tombstones never meet.
_CHANGES = f"""
(SELECT key, seq, embedding FROM "{SCHEMA}".memories
 WHERE tenant = $1 AND (seq, key) > ($2, $3) ORDER BY seq, key LIMIT $4)
UNION ALL
(SELECT key, seq, NULL::bytea FROM "{SCHEMA}".tombstones
 WHERE tenant = $1 AND (seq, key) > ($2, $3) ORDER BY seq, key LIMIT $4)
ORDER BY seq, key LIMIT $4
"""


@dataclass(frozen=True)
class Memory:
    """A memory to store; `id` is the caller's (in `put_many`, a second write of an id replaces the memory)."""

    id: str
    content: str
    metadata: dict[str, Any]
    importance: float


class Written(Enum):
    """What `put` did: stored the memory, or found that very memory already stored under its id (a retry)."""

    CREATED = "created"
    EXISTED = "existed"


class IdempotencyConflict(Exception):
    """The id already holds a different memory (content, metadata or importance): nothing was written."""


@dataclass(frozen=True)
class Quota:
    """What one tenant may hold in SomaMemory: memories, and bytes of content, metadata and embedding."""

    items: int
    bytes: int


class QuotaExceeded(Exception):
    """The memory would take the tenant over its quota: nothing was written."""

    def __init__(self, message: str, *, crossed: str, items: int, nbytes: int, quota: Quota) -> None:
        super().__init__(message)
        self.crossed, self.items, self.nbytes, self.quota = crossed, items, nbytes, quota


class WriteInDoubt(Exception):
    """The INSERT reached Postgres (or may have), but no verdict came back: it may have committed."""


def _in_doubt(exc: Exception) -> bool:
    """Whether a failure of a statement already sent leaves its outcome unknown (see _IN_DOUBT_CLASSES)."""
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        return state[:2] in _IN_DOUBT_CLASSES or state in _IN_DOUBT_STATES
    return True  # a timeout, a socket error, a connection closed mid-statement


@dataclass(frozen=True)
class Recalled:
    id: str
    content: str
    metadata: dict[str, Any]
    importance: float
    score: float


class MemoryStore:
    def __init__(self, db: Database, embedder: HashingEmbedder, quota: Quota | None = None) -> None:
        self._db = db
        self._embedder = embedder
        #: Checked by `put` (the API's writes); `put_many`, the bulk path of imports and benchmarks, does not.
        self.quota = quota or Quota(items=2**62, bytes=2**62)
        self.index = RecallIndex(embedder.dim, self._changes)
        #: Every tenant's index was built once since start-up (readiness waits for it).
        self.warm = False

    async def put(
        self, tenant: str, item_id: str, content: str, metadata: dict[str, Any], importance: float
    ) -> Written:
        """Store a memory under `item_id` unless the id is taken; returns once Postgres has committed it.

        An identical memory already there is this write done before (a retry): EXISTED, found by a read, so a retry
        takes no change number and waits on no lock. A different one raises IdempotencyConflict; the stored memory
        is left as it was. Raises WriteInDoubt when the INSERT was sent and no verdict came back, and the DB_ERRORS
        themselves when Postgres refused the write or was never reached (nothing was written).
        """
        args = (tenant, item_id, content, json.dumps(metadata), importance)
        embedding = to_bytes(self._embedder.embed(content))
        async with self._db.pool.acquire() as conn:
            same = await conn.fetchval(_SAME, *args)  # a failure here wrote nothing
            for _ in range(3):  # the id can be deleted between a conflict and the read after it; then insert again
                if same is not None:
                    if not same:
                        raise IdempotencyConflict(f"memory {item_id} already exists with other content")
                    return Written.EXISTED
                sent = False  # whether the INSERT (or the commit after it) may have reached Postgres
                try:
                    async with conn.transaction():
                        await self._within_quota(conn, tenant, item_id, content, args[3], embedding)
                        sent = True
                        inserted = await conn.fetchval(_INSERT, *args, embedding)
                    if inserted is not None:
                        return Written.CREATED
                    same = await conn.fetchval(_SAME, *args)  # another writer of this id committed first
                except DB_ERRORS as exc:
                    if sent and _in_doubt(exc):
                        raise WriteInDoubt(f"Postgres gave no verdict on the write of {item_id}: "
                                           f"{type(exc).__name__}: {exc}") from exc
                    raise
        # Each INSERT met a row that was gone by the read after it: other requests keep writing and deleting this
        # id. Nothing was written by this one.
        raise IdempotencyConflict(f"memory {item_id} is being written and deleted concurrently")

    async def _within_quota(self, conn: asyncpg.Connection, tenant: str, item_id: str, content: str,
                            metadata_json: str, embedding: bytes) -> None:
        """Raise QuotaExceeded unless the memory fits in the tenant's quota; holds the tenant's counter lock (until
        the transaction ends), so concurrent writes of one tenant are checked one after the other, exactly."""
        # The row first, so that there is one to lock: concurrent first writes of a tenant would otherwise each
        # find none, count nothing, and all go in (seen: 13 of 25 with a quota of 10).
        await conn.execute(f'INSERT INTO "{SCHEMA}".tenant_changes (tenant, last_seq) VALUES ($1, 0) '
                           "ON CONFLICT (tenant) DO NOTHING", tenant)
        row = await conn.fetchrow(_QUOTA, tenant, content, metadata_json, embedding, self.quota.items,
                                  self.quota.bytes)
        if row["crossed"] is not None:
            items, nbytes = int(row["items"]), int(row["bytes"])
            limit = (f"{self.quota.items} memories" if row["crossed"] == "items"
                     else f"{self.quota.bytes} bytes (it holds {nbytes}, this memory takes {int(row['size'])})")
            raise QuotaExceeded(f"tenant {tenant} is at its quota of {limit}; {item_id} was not stored: delete "
                                "memories to make room", crossed=str(row["crossed"]), items=items, nbytes=nbytes,
                                quota=self.quota)

    async def usage(self, tenant: str) -> tuple[int, int]:
        """(memories, bytes) the tenant holds, as the counters say."""
        async with self._db.pool.acquire() as conn:
            row = await conn.fetchrow(f'SELECT items, bytes FROM "{SCHEMA}".tenant_changes WHERE tenant = $1', tenant)
        return (int(row["items"]), int(row["bytes"])) if row is not None else (0, 0)

    async def put_many(self, tenant: str, memories: Sequence[Memory]) -> None:
        """Insert or replace memories in one statement and one change number (a later duplicate id wins): the bulk
        path (imports, benchmarks), where the caller owns the ids; `put` is the one that never replaces."""
        unique = list({m.id: m for m in memories}.values())
        if not unique:
            return
        embeddings = [to_bytes(self._embedder.embed(m.content)) for m in unique]
        async with self._db.pool.acquire() as conn:
            await conn.execute(
                _PUT, tenant, [m.id for m in unique], [m.content for m in unique],
                [json.dumps(m.metadata) for m in unique], [m.importance for m in unique], embeddings,
            )

    async def recall(self, tenant: str, query: str, top_k: int) -> list[Recalled]:
        vec = self._embedder.embed(query)
        keys = await self.index.candidates(tenant, vec, max(top_k * CANDIDATES_PER_RESULT, MIN_CANDIDATES))
        if not len(keys):
            return []
        # Rows are looked up by key alone, so the plan is the key index whatever the statistics say (filtering on
        # the tenant too lets a planner that has not yet seen a bulk load scan the tenant's rows instead). Keys are
        # unique across tenants and the tenant's index holds only its own; checking the tenant still costs nothing.
        async with self._db.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            rows = [
                r for r in await conn.fetch(
                    f'SELECT key, tenant, seq, embedding FROM "{SCHEMA}".memories WHERE key = ANY($1::bigint[])',
                    keys.tolist(),
                )
                if r["tenant"] == tenant
            ]
            if not rows:
                return []
            scores = cosine_scores(vec, matrix_from_bytes([bytes(r["embedding"]) for r in rows], self._embedder.dim))
            # Best score first; among equal scores, the most recently written.
            seqs = np.array([r["seq"] for r in rows], dtype=np.int64)
            best = np.lexsort((-seqs, -scores))[:top_k]
            chosen = {int(rows[i]["key"]): float(np.clip(scores[i], -1.0, 1.0)) for i in best}
            found = await conn.fetch(
                f'SELECT key, id, content, metadata, importance FROM "{SCHEMA}".memories WHERE key = ANY($1::bigint[])',
                list(chosen),
            )
        by_key = {int(r["key"]): r for r in found}
        return [
            Recalled(
                id=row["id"], content=row["content"], metadata=json.loads(row["metadata"]),
                importance=float(row["importance"]), score=score,
            )
            for key, score in chosen.items()
            if (row := by_key.get(key)) is not None
        ]

    async def delete(self, tenant: str, item_id: str) -> bool:
        async with self._db.pool.acquire() as conn, conn.transaction():
            # The counter lock first, as a write takes it (schema.py): a delete and a write never deadlock.
            await conn.execute(f'SELECT "{SCHEMA}".next_seq($1)', tenant)
            deleted = await conn.fetchval(
                f'DELETE FROM "{SCHEMA}".memories WHERE tenant = $1 AND id = $2 RETURNING id', tenant, item_id
            )
        return deleted is not None

    async def warm_up(self) -> None:
        """Build every tenant's index from Postgres, retrying while Postgres cannot be reached; then `warm`."""
        started = time.perf_counter()
        while True:
            try:
                await self._db.connect()
                async with self._db.pool.acquire() as conn:
                    tenants = [r["tenant"] for r in await conn.fetch(f'SELECT tenant FROM "{SCHEMA}".tenant_changes')]
                for tenant in tenants:
                    await self.index.catch_up(tenant)
                break
            except DB_ERRORS as exc:
                log.warning("recall index warm-up waits for Postgres: %s", exc)
                await asyncio.sleep(WARM_UP_RETRY_S)
        self.warm = True
        stats = self.index.stats()
        log.info("recall index warm: %d tenants, %d vectors, %.1f MiB, in %.1f s", stats.tenants, stats.vectors,
                 stats.nbytes / 2**20, time.perf_counter() - started)

    async def _changes(self, tenant: str, after: Cursor, limit: int) -> ChangePage:
        async with self._db.pool.acquire() as conn:
            rows = await conn.fetch(_CHANGES, tenant, after.seq, after.key, limit)
        live = [r for r in rows if r["embedding"] is not None]
        return ChangePage(
            keys=np.array([r["key"] for r in live], dtype=np.uint64),
            vectors=matrix_from_bytes([bytes(r["embedding"]) for r in live], self._embedder.dim),
            deleted=np.array([r["key"] for r in rows if r["embedding"] is None], dtype=np.uint64),
            last=Cursor(rows[-1]["seq"], rows[-1]["key"]) if rows else after,
            full=len(rows) == limit,
        )
