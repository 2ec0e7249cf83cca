"""The API's own Postgres tables (schema `somabrain`) and writing audit events inside a transaction.

`memory_index` is the API's record of what it stored in SomaMemory; every change to it, and every other state
change the API acknowledges, writes its audit event to `audit_events` and `outbox` in the same transaction, so an
acknowledged change always has its event and a rolled-back one never does.
"""

from __future__ import annotations

from typing import Any

from brain.audit.events import AuditEvent

SCHEMA = "somabrain"
MIGRATIONS = [
    """
    CREATE TABLE "{schema}".memory_index (
        tenant text NOT NULL,
        id text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        deleted_at timestamptz,
        queued boolean NOT NULL DEFAULT false,
        PRIMARY KEY (tenant, id)
    );
    CREATE TABLE "{schema}".audit_events (
        id text PRIMARY KEY,
        ts timestamptz NOT NULL,
        tenant text NOT NULL,
        subject text NOT NULL,
        action text NOT NULL,
        outcome text NOT NULL,
        item_id text,
        schema_version integer NOT NULL
    );
    CREATE INDEX audit_events_tenant_ts ON "{schema}".audit_events (tenant, ts);
    CREATE TABLE "{schema}".outbox (
        seq bigserial PRIMARY KEY,
        event_id text NOT NULL UNIQUE,
        topic text NOT NULL,
        key text NOT NULL,
        payload text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        attempts integer NOT NULL DEFAULT 0
    );
    """,
]


async def record(conn: Any, event: AuditEvent, topic: str) -> None:
    """Insert the event and its outbox row; call inside the transaction of the change it records."""
    await conn.execute(
        f'INSERT INTO "{SCHEMA}".audit_events (id, ts, tenant, subject, action, outcome, item_id, schema_version) '
        "VALUES ($1, $2::text::timestamptz, $3, $4, $5, $6, $7, $8)",
        event.id, event.ts, event.tenant, event.subject, event.action, event.outcome, event.item_id,
        event.schema_version,
    )
    await conn.execute(
        f'INSERT INTO "{SCHEMA}".outbox (event_id, topic, key, payload) VALUES ($1, $2, $3, $4)',
        event.id, topic, event.tenant, event.to_json(),
    )


async def index_remember(conn: Any, tenant: str, item_id: str, queued: bool) -> None:
    await conn.execute(
        f'INSERT INTO "{SCHEMA}".memory_index (tenant, id, queued) VALUES ($1, $2, $3) '
        "ON CONFLICT (tenant, id) DO UPDATE SET deleted_at = NULL, queued = EXCLUDED.queued",
        tenant, item_id, queued,
    )


async def index_delete(conn: Any, tenant: str, item_id: str) -> None:
    await conn.execute(
        f'UPDATE "{SCHEMA}".memory_index SET deleted_at = now() WHERE tenant = $1 AND id = $2',
        tenant, item_id,
    )
