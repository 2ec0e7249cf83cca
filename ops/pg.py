"""Postgres inside the `postgres` workload: psql through the target layer, session settings that make text output
stable, and a content checksum that both ends of a migration compute the same way.

psql runs in the workload's own container/pod as the image's POSTGRES_USER over the local socket (the postgres
image trusts local connections), so no password leaves the environment.
"""

# ruff: noqa: S608  SQL text is built only from identifiers that pass ops.pg.identifier() and checksums that
# match ops.migrate.CHECKSUM (a bundle's manifest is checked before any of it reaches SQL).

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from targets.base import ExecResult, Target

WORKLOAD = "postgres"
SCHEMAS = ("somabrain", "somamemory")
BOOKKEEPING = "schema_migrations"  # each schema's own migration record: compared, never copied

PSQL = ["sh", "-c", 'exec psql -X -q -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "${POSTGRES_DB:-$POSTGRES_USER}" "$@"',
        "psql"]
# Every value's text form depends on these; both ends of a migration set them, so COPY text and checksums agree.
SESSION = ("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; "
           "SET bytea_output = 'hex'; SET extra_float_digits = 1; SET client_encoding = 'UTF8';")


IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def identifier(name: str) -> str:
    """`name` when it is a plain lower-case SQL identifier (all of SomaBrain's are); else ValueError. Every name
    that goes into SQL text passes here first, including those read from a migration bundle."""
    if not IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


def qualified(schema: str, table: str) -> str:
    return f'"{identifier(schema)}"."{identifier(table)}"'


def checksum_sql(schema: str, table: str) -> str:
    """`rows:sum` where sum adds the first 60 bits of md5(row text) over every row: independent of row order,
    streaming (no aggregate of the whole table in memory), and equal exactly when the multisets of rows are."""
    return ("SELECT count(*) || ':' || coalesce(sum(('x' || substr(md5(r::text), 1, 15))::bit(60)::bigint), 0) "
            f"FROM {qualified(schema, table)} AS r")


def psql(target: Target, sql: str | None = None, args: Sequence[str] = (), stdin: bytes | None = None,
         sink: IO[bytes] | None = None, timeout: float = 600.0) -> ExecResult:
    argv = [*PSQL, *args] + (["-c", sql] if sql is not None else [])
    return target.exec(WORKLOAD, argv, stdin=stdin, sink=sink, timeout=timeout)


def query(target: Target, sql: str) -> list[list[str]]:
    """Rows of a query (unaligned, tab-separated, tuples only)."""
    result = psql(target, args=["-A", "-t", "-F", "\t"], stdin=f"{SESSION}\n{sql};\n\\q\n".encode()).check("psql")
    return [line.split("\t") for line in result.stdout.decode().splitlines() if line]


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]  # primary key columns (ordering); all columns when there is none

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"


TABLES_SQL = """
SELECT n.nspname, c.relname,
  (SELECT string_agg(a.attname, ',' ORDER BY a.attnum) FROM pg_attribute a
    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
  coalesce((SELECT string_agg(a.attname, ',' ORDER BY array_position(i.indkey::int2[], a.attnum))
    FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
    WHERE i.indrelid = c.oid AND i.indisprimary), '')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname IN ('somabrain', 'somamemory') AND c.relname <> 'schema_migrations'
ORDER BY 1, 2
"""


def tables(target: Target) -> list[Table]:
    found = []
    for schema, name, columns, key in query(target, TABLES_SQL):
        cols = tuple(columns.split(","))
        found.append(Table(schema, name, cols, tuple(key.split(",")) if key else cols))
    return found


def schema_versions(target: Target) -> dict[str, int]:
    """Highest applied migration per schema (0 when the schema has none yet)."""
    sql = f"SELECT table_schema FROM information_schema.tables WHERE table_name = '{BOOKKEEPING}'"
    present = {row[0] for row in query(target, sql)}
    versions = {}
    for schema in SCHEMAS:
        if schema in present:
            rows = query(target, f"SELECT coalesce(max(version), 0) FROM {qualified(schema, BOOKKEEPING)}")
            versions[schema] = int(rows[0][0])
        else:
            versions[schema] = 0
    return versions


def checksums(target: Target, wanted: Sequence[Table]) -> dict[str, str]:
    """label -> checksum for each table, in one psql session."""
    if not wanted:
        return {}
    sql = " UNION ALL ".join(f"SELECT '{t.label}', ({checksum_sql(t.schema, t.name)})" for t in wanted)
    return {label: value for label, value in query(target, sql)}
