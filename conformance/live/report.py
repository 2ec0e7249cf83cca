"""The JSON report: one document per run (conformance/schemas/report.schema.json).

    {"environment": "dev", "time": "2026-...Z", "target": "compose project somabrain",
     "checks": [{"id": "dns/resolves/redis", "dimension": "dns", "subject": "redis",
                 "expected": ..., "observed": ..., "status": "passed", "message": "..."}]}

Check ids are the same in both environments (they come from the service inventory's keys), so the parity gate
(`python -m conformance diff dev.json prod.json`) can compare the two runs check by check.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "report.schema.json"
DIMENSIONS = ("dns", "readiness", "tls", "netpol", "api")


def jsonable(value: Any) -> Any:
    """Make expected/observed values JSON: dataclasses, tuples, sets and mappings included."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(jsonable(v) for v in value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


@dataclasses.dataclass
class CheckEntry:
    id: str
    dimension: str
    subject: str
    expected: Any = None
    observed: Any = None
    status: str = "error"  # passed | failed | skipped | error
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "dimension": self.dimension,
            "subject": self.subject,
            "expected": jsonable(self.expected),
            "observed": jsonable(self.observed),
            "status": self.status,
        }
        if self.message:
            out["message"] = self.message
        return out


@dataclasses.dataclass
class Report:
    environment: str
    target: str
    time: str = dataclasses.field(default_factory=lambda: datetime.now(UTC).isoformat().replace("+00:00", "Z"))
    checks: list[CheckEntry] = dataclasses.field(default_factory=list)

    def add(self, entry: CheckEntry) -> None:
        # A check id appears once: a later phase (teardown error) overrides what the call phase said.
        for index, existing in enumerate(self.checks):
            if existing.id == entry.id:
                self.checks[index] = entry
                return
        self.checks.append(entry)

    def as_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "time": self.time,
            "target": self.target,
            "checks": [c.as_dict() for c in self.checks],
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")


def validate(document: Mapping[str, Any]) -> list[str]:
    """Schema errors of a report document (empty when it is valid)."""
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(document)]
