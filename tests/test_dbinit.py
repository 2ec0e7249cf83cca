"""`somabrain db-init` and the runtime role, on a real Postgres that checks passwords (scram-sha-256 for every role
but the superuser): both apps serve from a role that may read and write their tables and do nothing else, the step
is idempotent, adopts a database an older release built as the superuser, and refuses bad input with one line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from brain import dbinit
from brain.api.app import create_app
from brain.audit import store as audit_store
from brain.db import Database, DatabaseUnavailable
from brain.settings import Settings
from brain.somamemory import schema as memory_schema
from localservers.servers import AppServer, PostgresServer
from tests.api.helpers import headers

pytestmark = pytest.mark.integration
APP_USER = "somabrain_app"
PASSWORD = "app-password-0123456789"


@pytest.fixture(scope="module")
def pg(module_postgres: PostgresServer) -> PostgresServer:
    """The module's Postgres with password authentication for every role but the superuser (trust, as the
    helper starts it), so a wrong password is refused as in compose and k8s."""
    hba = module_postgres.data / "pg_hba.conf"
    hba.write_text("host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
                   "local all all trust\n")
    asyncio.run(_reload(module_postgres.dsn))
    return module_postgres


async def _reload(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


def database_dsn(pg: PostgresServer, database: str, user: str = "postgres", password: str | None = None) -> str:
    auth = f"{user}:{password}" if password else user
    return f"postgresql://{auth}@127.0.0.1:{pg.port}/{database}"


@pytest.fixture
async def database(pg: PostgresServer) -> AsyncIterator[str]:
    """A fresh database of the test's own in the module's Postgres (roles are cluster-wide: they stay)."""
    name = "t_" + os.urandom(6).hex()
    conn = await asyncpg.connect(pg.dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        yield name
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def init(pg: PostgresServer, database: str, password: str = PASSWORD) -> dbinit.Report:
    return await dbinit.bootstrap(database_dsn(pg, database), dbinit.Credentials(APP_USER, password, database))


async def app_connection(pg: PostgresServer, database: str, password: str = PASSWORD) -> asyncpg.Connection:
    return await asyncpg.connect(database_dsn(pg, database, APP_USER, password))


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SOMABRAIN_")}
    return subprocess.run([sys.executable, "-m", "brain.cli", "db-init", *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=120)


# --- what the runtime role may do ----------------------------------------------------------------------------

# Each is something an app never does; before db-init the apps logged in as the superuser, which may do all of it.
FORBIDDEN = [
    'CREATE TABLE somamemory.planted (x int)',
    'CREATE SCHEMA planted',
    'DROP TABLE somamemory.memories',
    'TRUNCATE somamemory.memories',
    'ALTER TABLE somabrain.audit_events ADD COLUMN planted int',
    'DELETE FROM somabrain.schema_migrations',
    'INSERT INTO somamemory.schema_migrations (version) VALUES (99)',
    'CREATE ROLE planted',
    'ALTER ROLE somabrain_app SUPERUSER',
    'SET session_replication_role = replica',
    "COPY (SELECT 1) TO PROGRAM 'true'",
    'CREATE FUNCTION somamemory.planted() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$',
]


@pytest.mark.parametrize("statement", FORBIDDEN)
async def test_the_runtime_role_may_not_change_the_schema_or_the_server(pg: PostgresServer, database: str,
                                                                        statement: str) -> None:
    await init(pg, database)
    conn = await app_connection(pg, database)
    try:
        assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
    finally:
        await conn.close()


async def test_both_apps_serve_from_the_runtime_role(pg: PostgresServer, database: str,
                                                     strict_env: dict[str, str], run_dir: Path, tenant: str) -> None:
    """A SomaMemory process and the API, both logged in as the runtime role: remember, recall, delete, audit,
    the quota counters (triggers) and the index rebuild at start all work without any right beyond DML."""
    await init(pg, database)
    app_dsn = database_dsn(pg, database, APP_USER, PASSWORD)
    memory = AppServer("memory", {"SOMABRAIN_POSTGRES_DSN": app_dsn}, run_dir)
    memory.start()
    try:
        env = {**strict_env, "SOMABRAIN_POSTGRES_DSN": app_dsn, "SOMABRAIN_MEMORY_HTTP_ENDPOINT": memory.url}
        app = create_app(Settings.from_env(env))
        async with app.test_app() as test_app:
            client = test_app.test_client()
            # Readiness comes from the background health checks: wait for their first rounds to pass.
            deadline = time.monotonic() + 30
            while (ready := await client.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, await ready.get_data(as_text=True)
                await asyncio.sleep(0.1)
            stored = await client.post("/remember", json={"content": "kept by the runtime role"},
                                       headers=headers(tenant))
            assert stored.status_code == 201, await stored.get_data(as_text=True)
            item = (await stored.get_json())["id"]
            found = await client.post("/recall", json={"query": "kept by the runtime role", "top_k": 3},
                                      headers=headers(tenant))
            assert item in {hit["id"] for hit in (await found.get_json())["memory"]}
            deleted = await client.delete(f"/memory/{item}", headers=headers(tenant))
            assert deleted.status_code in (200, 204), await deleted.get_data(as_text=True)
    finally:
        memory.stop()
    # A second SomaMemory start rebuilds its index from what the first stored, as the runtime role.
    again = AppServer("memory", {"SOMABRAIN_POSTGRES_DSN": app_dsn}, run_dir)
    again.start()
    again.stop()
    admin = await asyncpg.connect(database_dsn(pg, database))
    try:
        actions = [r["action"] for r in await admin.fetch(
            "SELECT action FROM somabrain.audit_events WHERE tenant = $1 ORDER BY ts", tenant)]
        assert actions[:1] == ["remember"] and "delete" in actions, actions
        usage = await admin.fetchrow("SELECT items FROM somamemory.tenant_changes WHERE tenant = $1", tenant)
        assert usage is not None and usage["items"] == 0  # counted in and out by the triggers
    finally:
        await admin.close()


# --- db-init itself --------------------------------------------------------------------------------------------

async def test_a_second_run_changes_nothing_but_the_password(pg: PostgresServer, database: str) -> None:
    first = await init(pg, database)
    assert first.applied == {audit_store.SCHEMA: list(range(1, len(audit_store.MIGRATIONS) + 1)),
                             memory_schema.SCHEMA: list(range(1, len(memory_schema.MIGRATIONS) + 1))}
    second = await init(pg, database, password="a-new-password-9876543210")
    assert second.applied == {audit_store.SCHEMA: [], memory_schema.SCHEMA: []}
    assert second.created == [] and second.adopted == []
    with pytest.raises(asyncpg.InvalidPasswordError):  # the store (Secret, .env.local) is the one source
        await app_connection(pg, database)
    conn = await app_connection(pg, database, "a-new-password-9876543210")
    await conn.close()


async def test_concurrent_runs_both_succeed(pg: PostgresServer, database: str) -> None:
    """Both Deployments' initContainers start side by side: each run waits for the other's lock."""
    reports = await asyncio.gather(init(pg, database), init(pg, database))
    applied = [sum(len(v) for v in r.applied.values()) for r in reports]
    assert sorted(applied) == [0, len(audit_store.MIGRATIONS) + len(memory_schema.MIGRATIONS)]


async def test_a_database_an_older_release_built_is_adopted(pg: PostgresServer, database: str, tenant: str) -> None:
    """Before db-init the apps migrated as the superuser, which then owned everything: the runtime role could not
    use those tables. db-init hands them to the owner role and the data stays."""
    for schema, migrations in dbinit.SCHEMAS:
        db = Database(database_dsn(pg, database), schema, migrations)
        await db.connect()
        if schema == memory_schema.SCHEMA:
            await db.pool.execute(
                "INSERT INTO somamemory.memories (tenant, id, content, metadata, importance, embedding) "
                "VALUES ($1, 'm1', 'from the old release', '{}', 0.5, ''::bytea)", tenant)
        await db.close()
    report = await init(pg, database)
    assert "schema somamemory" in report.adopted and "somamemory.memories" in report.adopted
    assert report.applied == {audit_store.SCHEMA: [], memory_schema.SCHEMA: []}
    conn = await app_connection(pg, database)
    try:
        assert await conn.fetchval("SELECT content FROM somamemory.memories WHERE tenant = $1", tenant) == \
            "from the old release"
        owners = await conn.fetch(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) AS owner FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname IN ('somabrain', 'somamemory')")
        assert [r["owner"] for r in owners] == [dbinit.OWNER]
    finally:
        await conn.close()


async def test_an_app_behind_no_migration_needs_no_rights(pg: PostgresServer, database: str) -> None:
    """The apps still migrate when they may (dev, tests); as the runtime role, a current schema costs no DDL, and
    one behind the build is a clear error naming the command, not a permission traceback."""
    await init(pg, database)
    app_dsn = database_dsn(pg, database, APP_USER, PASSWORD)
    current = Database(app_dsn, memory_schema.SCHEMA, memory_schema.MIGRATIONS)
    await current.connect()
    await current.close()
    ahead = Database(app_dsn, memory_schema.SCHEMA, [*memory_schema.MIGRATIONS, "SELECT 1"])
    with pytest.raises(DatabaseUnavailable) as refused:
        await ahead.connect()
    message = str(refused.value)
    assert f"schema somamemory is at migration {len(memory_schema.MIGRATIONS)} of " \
           f"{len(memory_schema.MIGRATIONS) + 1}" in message
    assert f"role {APP_USER} may not migrate it" in message and "run `somabrain db-init`" in message


# --- the command line ------------------------------------------------------------------------------------------

def test_the_command_reports_what_it_did(pg: PostgresServer, database: str) -> None:
    env = {dbinit.ADMIN_DSN: database_dsn(pg, database),
           dbinit.APP_DSN: database_dsn(pg, database, APP_USER, PASSWORD)}
    first = run_cli(env)
    assert first.returncode == 0, first.stderr
    versions = ", ".join(str(v) for v in range(1, len(memory_schema.MIGRATIONS) + 1))
    assert f"somabrain db-init: schema somamemory: applied migration(s) {versions}" in first.stdout
    second = run_cli(env)
    assert second.returncode == 0, second.stderr
    assert "somabrain db-init: schema somabrain: migrations current" in second.stdout
    assert f"role {APP_USER}: password set" in second.stdout


@pytest.fixture(scope="module")
def plain_role(pg: PostgresServer) -> Iterator[str]:
    async def create() -> None:
        conn = await asyncpg.connect(pg.dsn)
        try:
            await conn.execute("DROP ROLE IF EXISTS plain_login")
            await conn.execute("CREATE ROLE plain_login LOGIN PASSWORD 'plain-password-12345'")
        finally:
            await conn.close()
    asyncio.run(create())
    yield "plain_login:plain-password-12345"


@pytest.mark.parametrize(("admin", "app", "message"), [
    (None, "app", "SOMABRAIN_POSTGRES_ADMIN_DSN is not set"),
    ("admin", None, "SOMABRAIN_POSTGRES_DSN is not set"),
    ("admin", "mysql://somabrain_app:app-password-0123456789@h/d",
     "SOMABRAIN_POSTGRES_DSN: scheme must be postgresql://"),
    ("admin", "postgresql://somabrain_app:short@h/{db}", "the password must be at least 16 characters"),
    ("admin", "postgresql://Robert'); DROP:app-password-0123456789@h/{db}", "must be lower-case letters"),
    ("admin", "postgresql://postgres:app-password-0123456789@h/{db}", "role 'postgres' is reserved"),
    ("admin", "postgresql://somabrain_app:app-password-0123456789@h/other", "connects to database"),
    ("plain", "app", "must name a superuser"),
])
def test_bad_input_is_one_line_and_exit_2(pg: PostgresServer, database: str, plain_role: str, admin: str | None,
                                          app: str | None, message: str) -> None:
    values = {"admin": database_dsn(pg, database), "plain": f"postgresql://{plain_role}@127.0.0.1:{pg.port}/{database}",
              "app": database_dsn(pg, database, APP_USER, PASSWORD)}
    env = {}
    if admin is not None:
        env[dbinit.ADMIN_DSN] = values[admin]
    if app is not None:
        env[dbinit.APP_DSN] = values.get(app, app.format(db=database))
    result = run_cli(env)
    assert result.returncode == 2, result
    assert result.stderr.startswith("somabrain db-init: configuration error: ") and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_unreachable_postgres_is_exit_1_after_the_wait(pg: PostgresServer) -> None:
    closed = f"postgresql://postgres@127.0.0.1:1/{'x'}"
    result = run_cli({dbinit.ADMIN_DSN: closed,
                      dbinit.APP_DSN: "postgresql://somabrain_app:app-password-0123456789@127.0.0.1:1/x"},
                     "--wait", "0")
    assert result.returncode == 1, result
    assert "somabrain db-init: Postgres refused or unreachable" in result.stderr and "Traceback" not in result.stderr
