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
        """Bring `<schema>` to this build's migrations, or check that it is there already.

        A schema at the current version costs one read and no DDL, so the runtime role (`somabrain db-init`), which
        may not create anything, connects to a migrated database. A schema behind the build is migrated only when
        the role may (dev and tests connect as an owner); otherwise this names the command that does it.
        """
        async with pool.acquire() as conn:
            if await recorded_versions(conn, self.schema) >= set(range(1, len(self._migrations) + 1)):
                return
            try:
                await apply_migrations(conn, self.schema, self._migrations)
            except asyncpg.InsufficientPrivilegeError as exc:
                done = await recorded_versions(conn, self.schema)
                user = await conn.fetchval("SELECT current_user")
                raise DatabaseUnavailable(
                    f"schema {self.schema} is at migration {max(done, default=0)} of {len(self._migrations)} and "
                    f"role {user} may not migrate it ({exc}): run `somabrain db-init` (compose: the sb_dbinit "
                    "service; k8s: the db-init initContainer)"
                ) from None


async def recorded_versions(conn: asyncpg.Connection, schema: str) -> set[int]:
    """The migrations recorded in `<schema>.schema_migrations`; empty when the schema or the table is absent."""
    if await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".schema_migrations') is None:
        return set()
    return {r["version"] for r in await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')}


async def apply_migrations(conn: asyncpg.Connection, schema: str, migrations: Sequence[str]) -> list[int]:
    """Apply the numbered migrations not yet recorded in `<schema>.schema_migrations`, in one transaction under an
    advisory lock (so concurrent workers and replicas apply each once); returns the versions applied."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", schema)
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations '
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = await recorded_versions(conn, schema)
        for version, statement in enumerate(migrations, start=1):
            if version in done:
                continue
            log.info("applying migration %s.%d", schema, version)
            await conn.execute(statement.format(schema=schema))
            await conn.execute(f'INSERT INTO "{schema}".schema_migrations (version) VALUES ($1)', version)
            applied.append(version)
    return applied
