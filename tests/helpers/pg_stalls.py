"""Two real ways to make a Postgres write outlast its caller's patience, for tests of ambiguous outcomes.

- `table_locked`: a lock held on a table from another connection, so that an INSERT waits for it. A caller that
  gives up (and closes the connection) gets the statement cancelled: nothing is written, though the caller cannot
  know that.
- `commits_stalled`: every commit on the server waits for a synchronous standby that does not exist. The commit
  record is already written; interrupted (a cancel, the client gone, the backend terminated), the session stops
  waiting and the commit stands ("the transaction has already committed locally"). So a write the caller gave up on
  is stored after all: the case an answer must never call "nothing was written". Reads are not held up.

Nothing here is a mock: both are the server's own behaviour, switched on and off by SQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

_ABSENT_STANDBY = "absent_standby"
#: A table of the helper's own: a commit waits for a standby only if its transaction wrote WAL.
_PROBE = "public.pg_stalls_probe"
_PROBE_APP = "pg_stalls_probe"


async def _commit_waits(dsn: str, within_s: float = 0.5) -> bool:
    """Whether a commit that wrote something hangs on this server right now."""
    # A probe that timed out stays waiting, unanswered, until commits resume: its name keeps it out of
    # wait_event_pids.
    probe = await asyncpg.connect(dsn, server_settings={"application_name": _PROBE_APP})
    try:
        await probe.execute(f"INSERT INTO {_PROBE} VALUES (now())", timeout=within_s)  # noqa: S608 (a constant)
        return False
    except TimeoutError:
        return True
    finally:
        probe.terminate()


async def _until(done: bool, dsn: str, what: str) -> None:
    for _ in range(100):
        if await _commit_waits(dsn) == done:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


@asynccontextmanager
async def commits_stalled(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """Commits hang on the server at `dsn` inside the block (yields an admin connection); they go through again,
    and the waiting ones are released, when it ends."""
    admin = await asyncpg.connect(dsn)
    await admin.execute(f"CREATE TABLE IF NOT EXISTS {_PROBE} (at timestamptz)")
    try:
        await admin.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{_ABSENT_STANDBY}'")
        await admin.execute("SELECT pg_reload_conf()")
        await _until(True, dsn, "commits to wait for the absent standby")
        yield admin
    finally:
        await admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()
        await _until(False, dsn, "commits to go through again")


@asynccontextmanager
async def table_locked(dsn: str, table: str) -> AsyncIterator[None]:
    """`table` is locked against writes (EXCLUSIVE: reads go on) inside the block; released when it ends."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
            yield
    finally:
        await conn.close()


async def wait_event_pids(admin: asyncpg.Connection, event: str) -> list[int]:
    """The backends waiting on `event` (e.g. 'SyncRep'), but this module's probes, polled until there is one (30 s
    at most)."""
    for _ in range(600):
        pids = [r["pid"] for r in await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE wait_event = $1 AND application_name <> $2", event, _PROBE_APP)]
        if pids:
            return pids
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no backend waited on {event} within 30s")
