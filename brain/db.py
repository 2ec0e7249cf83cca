"""Postgres through an asyncpg pool, with versioned, idempotent migrations applied at start-up.

`Database.connect()` may fail while Postgres is down; the owner keeps calling it (the health loop does) until it
succeeds, so an app that starts before its database becomes ready once the database answers. asyncpg pools replace
broken connections on their own, so a Postgres restart is survived.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import asyncpg

log = logging.getLogger(__name__)


class DatabaseUnavailable(Exception):
    """Postgres could not be reached or the statement failed for want of a connection."""


#: What a storage call raises when Postgres is down, restarting or refusing: answered as 503, never 500.
DB_ERRORS: tuple[type[Exception], ...] = (
    DatabaseUnavailable,
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresError,
    # A connection broken mid-operation (e.g. Postgres stopped) can surface as this instead of an OSError.
    asyncpg.exceptions.InternalClientError,
)


class Database:
    def __init__(self, dsn: str, schema: str, migrations: Sequence[str], timeout_s: float = 2.0) -> None:
        self._dsn = dsn
        self.schema = schema
        self._migrations = list(migrations)
        self._timeout_s = timeout_s
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise DatabaseUnavailable("Postgres is not connected yet")
        return self._pool

    async def connect(self) -> None:
        """Create the pool and apply migrations, once; safe to call repeatedly."""
        async with self._lock:
            if self._pool is not None:
                return
            pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=10, timeout=self._timeout_s, command_timeout=10
            )
            try:
                await self._migrate(pool)
            except BaseException:
                await pool.close()
                raise
            self._pool = pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> bool:
        await self.connect()
        async with self.pool.acquire(timeout=self._timeout_s) as conn:
            return bool(await conn.fetchval("SELECT 1") == 1)

    async def _migrate(self, pool: asyncpg.Pool) -> None:
        """Apply numbered migrations not yet recorded in `<schema>.schema_migrations`, under an advisory lock."""
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.schema)
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{self.schema}".schema_migrations '
                "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch(f'SELECT version FROM "{self.schema}".schema_migrations')}
            for version, statement in enumerate(self._migrations, start=1):
                if version in done:
                    continue
                log.info("applying migration %s.%d", self.schema, version)
                await conn.execute(statement.format(schema=self.schema))
                await conn.execute(f'INSERT INTO "{self.schema}".schema_migrations (version) VALUES ($1)', version)
