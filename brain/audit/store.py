"""The API's own Postgres tables (schema `somabrain`) and writing audit events inside a transaction.

`memory_index` is the API's record of what it stored in SomaMemory; every change to it, and every other state
change the API acknowledges, writes its audit event to `audit_events` and `outbox` in one atomic statement, so an
acknowledged change always has its event and a failed one never does.
"""

from __future__ import annotations

from typing import Any, Literal

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
    # Aggregated refusals (brain.audit.refusals): one row stands for `count` refused requests.
    'ALTER TABLE "{schema}".audit_events ADD COLUMN count integer NOT NULL DEFAULT 1',
]


Index = Literal["remember", "delete"]


class _Params:
    """Numbered query parameters, each value bound once however often the statement uses it."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._slots: dict[str, str] = {}

    def __call__(self, name: str, value: Any, cast: str = "") -> str:
        if name not in self._slots:
            self.values.append(value)
            self._slots[name] = f"${len(self.values)}"
        return self._slots[name] + cast


async def commit(
    conn: Any, event: AuditEvent, *, topic: str | None, index: Index | None = None, queued: bool = False
) -> None:
    """Record `event` (and, with `index`, the API's record of the change) in one atomic statement.

    One statement of data-modifying CTEs: atomic without BEGIN/COMMIT, and one round trip. With `topic`, the event
    also goes to the outbox for the Kafka publisher; without one (no Kafka configured) only `audit_events` keeps it,
    so no outbox row waits for a publisher that does not exist.
    """
    p = _Params()
    parts = [
        f'INSERT INTO "{SCHEMA}".audit_events (id, ts, tenant, subject, action, outcome, item_id, schema_version, '
        f"count) VALUES ({p('id', event.id)}, {p('ts', event.ts, '::text::timestamptz')}, {p('tenant', event.tenant)}, "
        f"{p('subject', event.subject)}, {p('action', event.action)}, {p('outcome', event.outcome)}, "
        f"{p('item', event.item_id)}, {p('version', event.schema_version)}, {p('count', event.count)})"
    ]
    if index == "remember":
        parts.append(
            f'INSERT INTO "{SCHEMA}".memory_index (tenant, id, queued) '
            f"VALUES ({p('tenant', event.tenant)}, {p('item', event.item_id)}, {p('queued', queued)}) "
            "ON CONFLICT (tenant, id) DO UPDATE SET deleted_at = NULL, queued = EXCLUDED.queued"
        )
    elif index == "delete":
        parts.append(
            f'UPDATE "{SCHEMA}".memory_index SET deleted_at = now() '
            f"WHERE tenant = {p('tenant', event.tenant)} AND id = {p('item', event.item_id)}"
        )
    if topic is not None:
        parts.append(
            f'INSERT INTO "{SCHEMA}".outbox (event_id, topic, key, payload) '
            f"VALUES ({p('id', event.id)}, {p('topic', topic)}, {p('tenant', event.tenant)}, "
            f"{p('payload', event.to_json())})"
        )
    *ctes, last = parts
    sql = ("WITH " + ", ".join(f"w{i} AS ({cte})" for i, cte in enumerate(ctes)) + " " if ctes else "") + last
    await conn.execute(sql, *p.values)
