"""`somabrain db-init`: the Postgres roles and schemas both apps need, created or brought up to date, idempotently.

The apps connect as a runtime role that may read and write their tables and nothing else: no CREATE, DROP, ALTER,
TRUNCATE or role changes. Everything that needs more runs here, once per start of a deployment, as the Postgres
superuser, which only this step holds (compose: the one-shot service `sb_dbinit`; k8s: the `db-init`
initContainer of both Deployments):

1. the owner role `somabrain_owner` (NOLOGIN): owns the schemas `somabrain` and `somamemory` and everything in them.
   Objects an older release created as the superuser are handed over to it.
2. the runtime role, named by the apps' own DSN (`SOMABRAIN_POSTGRES_DSN`), created with LOGIN and that DSN's
   password, which is set again at every run: the Secret (or .env.local) is the one source of the password.
3. both apps' migrations, applied as the owner (`SET ROLE`), so what they create belongs to it.
4. the runtime role's rights: CONNECT on the database; USAGE on the two schemas; SELECT, INSERT, UPDATE, DELETE on
   their tables (SELECT only on `schema_migrations`); sequences; EXECUTE on their functions; the same by default
   for what later migrations create.

Inputs (environment): `SOMABRAIN_POSTGRES_ADMIN_DSN`, the superuser's DSN; `SOMABRAIN_POSTGRES_DSN`, the apps' DSN
(the role to create and its password; the database must be the same). Exit 0 done, 2 configuration error (one
line naming the variable), 1 Postgres refused or unreachable (after retrying for `--wait` seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import asyncpg

from brain.audit import store as audit_store
from brain.db import apply_migrations
from brain.errors import ConfigError
from brain.somamemory import schema as memory_schema

log = logging.getLogger(__name__)

PROG = "somabrain db-init"
OWNER = "somabrain_owner"
ADMIN_DSN = "SOMABRAIN_POSTGRES_ADMIN_DSN"
APP_DSN = "SOMABRAIN_POSTGRES_DSN"
#: Every schema the apps use, with its migrations: the API's audit store and SomaMemory's memories.
SCHEMAS: tuple[tuple[str, Sequence[str]], ...] = (
    (audit_store.SCHEMA, audit_store.MIGRATIONS),
    (memory_schema.SCHEMA, memory_schema.MIGRATIONS),
)
_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Kinds of object pg_class holds that a schema's owner must own: tables, sequences, views, materialized views,
# partitioned tables. (Indexes follow their table.)
_RELKINDS = {"r": "TABLE", "p": "TABLE", "S": "SEQUENCE", "v": "VIEW", "m": "MATERIALIZED VIEW"}


@dataclass(frozen=True)
class Credentials:
    """The runtime role's name, password and database, from the apps' DSN."""

    user: str
    password: str
    database: str


@dataclass
class Report:
    created: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    applied: dict[str, list[int]] = field(default_factory=dict)

    def lines(self, creds: Credentials) -> list[str]:
        out = [f"role {name}: created" for name in self.created]
        if self.adopted:
            out.append(f"{len(self.adopted)} object(s) handed to {OWNER}: {', '.join(self.adopted)}")
        for schema, versions in self.applied.items():
            out.append(f"schema {schema}: " + (f"applied migration(s) {', '.join(map(str, versions))}" if versions
                                               else "migrations current"))
        out.append(f"role {creds.user}: password set, rights on {', '.join(s for s, _ in SCHEMAS)} granted "
                   f"(database {creds.database})")
        return out


def app_credentials(env: dict[str, str]) -> Credentials:
    """The role the apps log in as, read from their DSN. Refuses what would make the runtime role privileged."""
    raw = env.get(APP_DSN, "").strip()
    if not raw:
        raise ConfigError(f"{APP_DSN} is not set: the apps' DSN names the runtime role to create and its password")
    parts = urlsplit(raw)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"{APP_DSN}: scheme must be postgresql:// or postgres://")
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    database = unquote(parts.path.lstrip("/")) or user
    if not _ROLE_NAME.fullmatch(user):
        raise ConfigError(f"{APP_DSN}: role name {user!r} must be lower-case letters, digits and _ "
                          "(at most 63, not starting with a digit)")
    if user in (OWNER, "postgres") or user.startswith("pg_"):
        raise ConfigError(f"{APP_DSN}: role {user!r} is reserved; the apps need a role of their own")
    if len(password) < 16:
        raise ConfigError(f"{APP_DSN}: the password must be at least 16 characters")
    return Credentials(user, password, database)


def admin_dsn(env: dict[str, str]) -> str:
    raw = env.get(ADMIN_DSN, "").strip()
    if not raw:
        raise ConfigError(f"{ADMIN_DSN} is not set: db-init connects as the Postgres superuser")
    if urlsplit(raw).scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"{ADMIN_DSN}: scheme must be postgresql:// or postgres://")
    return raw


async def _ensure_role(conn: asyncpg.Connection, name: str, login: bool, report: Report) -> None:
    if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name) is None:
        await conn.execute(f'CREATE ROLE "{name}"')
        report.created.append(name)
    # Whatever an operator did to them by hand, these roles are never more than this.
    await conn.execute(f'ALTER ROLE "{name}" {"LOGIN" if login else "NOLOGIN"} NOSUPERUSER NOCREATEDB NOCREATEROLE '
                       "NOREPLICATION NOBYPASSRLS")


async def _adopt(conn: asyncpg.Connection, schema: str, report: Report) -> None:
    """Hand the schema and what is in it to the owner role (an older release created them as the superuser)."""
    owner = await conn.fetchval(
        "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1", schema)
    if owner is None:
        await conn.execute(f'CREATE SCHEMA "{schema}" AUTHORIZATION "{OWNER}"')
        return
    if owner != OWNER:
        await conn.execute(f'ALTER SCHEMA "{schema}" OWNER TO "{OWNER}"')
        report.adopted.append(f"schema {schema}")
    rows = await conn.fetch(
        """SELECT c.relname, c.relkind::text AS relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = $1 AND c.relkind::text = ANY($2::text[]) AND pg_get_userbyid(c.relowner) <> $3
             AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid
                                                  AND d.deptype IN ('a', 'i')))""",
        schema, list(_RELKINDS), OWNER)
    for row in rows:  # a sequence owned by a column follows its table
        await conn.execute(f'ALTER {_RELKINDS[row["relkind"]]} "{schema}"."{row["relname"]}" OWNER TO "{OWNER}"')
        report.adopted.append(f"{schema}.{row['relname']}")
    funcs = await conn.fetch(
        """SELECT p.oid::regprocedure::text AS signature FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = $1 AND pg_get_userbyid(p.proowner) <> $2""", schema, OWNER)
    for row in funcs:
        await conn.execute(f'ALTER FUNCTION {row["signature"]} OWNER TO "{OWNER}"')
        report.adopted.append(row["signature"])


async def _grant(conn: asyncpg.Connection, schema: str, app: str) -> None:
    s, a = f'"{schema}"', f'"{app}"'
    for statement in (
        f"GRANT USAGE ON SCHEMA {s} TO {a}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {a}",
        f"REVOKE INSERT, UPDATE, DELETE ON {s}.schema_migrations FROM {a}",
        f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {s} TO {a}",
        f"GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} TO {a}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE \"{OWNER}\" IN SCHEMA {s} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES "
        f"TO {a}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE \"{OWNER}\" IN SCHEMA {s} GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {a}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE \"{OWNER}\" IN SCHEMA {s} GRANT EXECUTE ON FUNCTIONS TO {a}",
    ):
        await conn.execute(statement)


async def bootstrap(dsn: str, creds: Credentials, timeout_s: float = 10.0) -> Report:
    """Run every step on the superuser connection `dsn`, under one advisory lock (replicas start side by side)."""
    report = Report()
    conn = await asyncpg.connect(dsn, timeout=timeout_s)
    try:
        row = await conn.fetchrow("SELECT current_database() AS db, rolsuper FROM pg_roles WHERE rolname = "
                                  "current_user")
        if row is None or not row["rolsuper"]:
            raise ConfigError(f"{ADMIN_DSN} must name a superuser (it creates roles and hands objects over)")
        if row["db"] != creds.database:
            raise ConfigError(f"{ADMIN_DSN} connects to database {row['db']!r} and {APP_DSN} to "
                              f"{creds.database!r}: they must be the same")
        if creds.user == await conn.fetchval("SELECT current_user"):
            raise ConfigError(f"{APP_DSN} names the superuser: the apps need a role of their own")
        await conn.execute("SELECT pg_advisory_lock(hashtext('somabrain.db-init'))")
        try:
            await _ensure_role(conn, OWNER, login=False, report=report)
            await _ensure_role(conn, creds.user, login=True, report=report)
            await conn.execute(f'ALTER ROLE "{creds.user}" PASSWORD {_literal(creds.password)}')
            db = f'"{creds.database}"'
            await conn.execute(f'GRANT CONNECT ON DATABASE {db} TO "{creds.user}"')
            await conn.execute(f'GRANT CREATE ON DATABASE {db} TO "{OWNER}"')
            for schema, migrations in SCHEMAS:
                await _adopt(conn, schema, report)
                await conn.execute(f'SET ROLE "{OWNER}"')
                try:
                    report.applied[schema] = await apply_migrations(conn, schema, migrations)
                finally:
                    await conn.execute("RESET ROLE")
                await _grant(conn, schema, creds.user)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext('somabrain.db-init'))")
    finally:
        await conn.close()
    return report


def _literal(value: str) -> str:
    """A string literal for the one statement that cannot take a parameter (ALTER ROLE ... PASSWORD)."""
    return "'" + value.replace("'", "''") + "'"


async def _run(dsn: str, creds: Credentials, wait_s: float) -> Report:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return await bootstrap(dsn, creds)
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.ConnectionDoesNotExistError, TimeoutError) as exc:
            if time.monotonic() >= deadline:
                raise
            print(f"{PROG}: Postgres not reachable yet ({exc.__class__.__name__}: {exc}); retrying", file=sys.stderr)
            await asyncio.sleep(2)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description=(__doc__ or "").split("\n\n")[0],
        epilog=f"Reads {ADMIN_DSN} (the superuser) and {APP_DSN} (the apps' role) from the environment.")
    p.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                   help="keep retrying while Postgres is not reachable, up to this long (default 60)")
    return p


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(list(argv))
    try:
        creds = app_credentials(dict(os.environ))
        dsn = admin_dsn(dict(os.environ))
        report = asyncio.run(_run(dsn, creds, args.wait))
    except ConfigError as exc:
        print(f"{PROG}: configuration error: {exc}", file=sys.stderr)
        return 2
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"{PROG}: Postgres refused or unreachable: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
    for line in report.lines(creds):
        print(f"{PROG}: {line}")
    return 0
