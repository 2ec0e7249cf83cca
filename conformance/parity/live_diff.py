"""`python -m conformance diff dev.json prod.json`: two conformance reports, compared check by check.

Both files must follow conformance/schemas/report.schema.json. Per check id:
- same status on both sides -> ok (both failing is still parity: the suite itself reports failures);
- `skipped` on one side -> ok, noted (the check does not apply in that environment);
- passed on one side and failed/error on the other -> drift;
- present on one side only -> drift.
Exceptions use dimension `check` and the check id as subject."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from conformance.loaders.errors import InputError
from conformance.parity.exceptions import apply_exceptions, load_exceptions
from conformance.parity.findings import Finding, drift, ok

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "report.schema.json"
DIFF_DIMENSIONS = ("check",)


@cache
def _schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return data


def load_report(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(path, "report does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read report: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise InputError(path, f"malformed JSON: {exc}") from exc
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(_schema(), format_checker=jsonschema.FormatChecker()).iter_errors(data)
    )
    if error is not None:
        where = "/".join(map(str, error.absolute_path)) or "(top)"
        raise InputError(path, f"not a conformance report ({SCHEMA_PATH.name}): at {where}: {error.message}")
    ids = [c["id"] for c in data["checks"]]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError(path, f"duplicate check ids: {', '.join(dupes)}")
    return data  # type: ignore[no-any-return]


def _show(check: dict[str, Any] | None) -> str | None:
    if check is None:
        return None
    observed = json.dumps(check.get("observed"), sort_keys=True)
    return f"{check['status']} (observed {observed})"


def diff_reports(dev: dict[str, Any], prod: dict[str, Any]) -> list[Finding]:
    dev_checks = {c["id"]: c for c in dev["checks"]}
    prod_checks = {c["id"]: c for c in prod["checks"]}
    out: list[Finding] = []
    for check_id in sorted(set(dev_checks) | set(prod_checks)):
        d, p = dev_checks.get(check_id), prod_checks.get(check_id)
        dim = "check"
        if d is None or p is None:
            side = "dev" if d is None else "prod"
            out.append(drift(dim, check_id, _show(d), _show(p), f"the check did not run in {side}"))
        elif d["status"] == p["status"]:
            reason = (
                "fails in both environments (a conformance failure, not drift)"
                if d["status"] in ("failed", "error")
                else None
            )
            out.append(ok(dim, check_id, _show(d), _show(p), reason))
        elif "skipped" in (d["status"], p["status"]):
            side = "dev" if d["status"] == "skipped" else "prod"
            out.append(ok(dim, check_id, _show(d), _show(p), f"does not apply in {side}"))
        else:
            out.append(drift(dim, check_id, _show(d), _show(p), f"{d['status']} in dev, {p['status']} in prod"))
    return out


def run_diff(dev_path: Path, prod_path: Path, exceptions_file: Path | None) -> list[Finding]:
    exceptions = load_exceptions(exceptions_file, DIFF_DIMENSIONS) if exceptions_file else []
    dev, prod = load_report(dev_path), load_report(prod_path)
    for path, report, want in ((dev_path, dev, "dev"), (prod_path, prod, "prod")):
        if report["environment"] != want:
            raise InputError(path, f"environment is {report['environment']!r}; expected {want!r} in this position")
    return apply_exceptions(diff_reports(dev, prod), exceptions)
