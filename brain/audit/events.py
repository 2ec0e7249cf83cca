"""Audit events. `id` doubles as the dedupe key: delivery is at least once, so consumers drop repeats by it."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime

SCHEMA_VERSION = 1


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class AuditEvent:
    tenant: str
    subject: str
    action: str  # remember | delete | act
    #: ok | queued | requested | not_found | denied | unauthorized | rate_limited | unknown (a /remember that
    #: SomaMemory may or may not have stored: its answer was lost)
    outcome: str
    item_id: str | None = None
    #: How many occurrences this event stands for: 1, except for aggregated refusals (brain.audit.refusals).
    count: int = 1
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    ts: str = field(default_factory=_now)
    schema_version: int = SCHEMA_VERSION

    @property
    def dedupe_key(self) -> str:
        return self.id

    def to_json(self) -> str:
        # Every field is a str, int or None, so reading them directly is what dataclasses.asdict's deep copy would
        # give, at a third of its cost (this runs once per event on every /act).
        record = {name: getattr(self, name) for name in _FIELDS}
        record["dedupe_key"] = self.dedupe_key
        return json.dumps(record, separators=(",", ":"))


_FIELDS = tuple(f.name for f in fields(AuditEvent))
