"""`python -m conformance diff dev.json prod.json`: two conformance reports, compared check by check.

Both files must follow conformance/schemas/report.schema.json. Per check id, parity is one thing only: passed
on both sides. Everything else is drift:
- passed on one side and failed, errored or skipped on the other;
- failed (or errored) on both: both environments are wrong the same way, which is not the promise;
- skipped on both: nothing was shown;
- present on one side only.
A difference that is so by design (a service the seed puts outside the cluster in prod, a Kubernetes object
compose has no counterpart of) is accepted in conformance/diff-exceptions.yaml: dimension `check`, the exact
check id as subject, and the two statuses it accepts (`dev:`/`prod:`; `null` = absent). When either side's
status changes, the exception no longer matches: the check is drift again and the exception is stale."""

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


def _status(check: dict[str, Any] | None) -> str | None:
    return None if check is None else str(check["status"])


def _why(side: str, check: dict[str, Any]) -> str:
    """What a side's report says about a check that did not pass: its message, else what it observed."""
    said = check.get("message") or check.get("reason") or json.dumps(check.get("observed"), sort_keys=True)
    return f"{side} {check['status']}: {' '.join(str(said).split())[:240]}"


def diff_reports(dev: dict[str, Any], prod: dict[str, Any]) -> list[Finding]:
    dev_checks = {c["id"]: c for c in dev["checks"]}
    prod_checks = {c["id"]: c for c in prod["checks"]}
    out: list[Finding] = []
    for check_id in sorted(set(dev_checks) | set(prod_checks)):
        d, p = dev_checks.get(check_id), prod_checks.get(check_id)
        dim = "check"
        if d is None or p is None:
            side, there = ("dev", p) if d is None else ("prod", d)
            assert there is not None
            out.append(drift(dim, check_id, _status(d), _status(p),
                             f"the check did not run in {side} ({_why('dev' if d else 'prod', there)})"))
        elif d["status"] == p["status"] == "passed":
            out.append(ok(dim, check_id, "passed", "passed"))
        elif d["status"] == p["status"]:
            what = {"skipped": "skipped on both sides: nothing was shown"}.get(
                d["status"], f"{d['status']} on both sides: the same fault in both environments is not parity")
            out.append(drift(dim, check_id, d["status"], p["status"],
                             f"{what} ({_why('dev', d)}; {_why('prod', p)})"))
        else:
            notes = "; ".join(_why(side, c) for side, c in (("dev", d), ("prod", p)) if c["status"] != "passed")
            out.append(drift(dim, check_id, d["status"], p["status"],
                             f"{d['status']} in dev, {p['status']} in prod ({notes})"))
    return out


def run_diff(dev_path: Path, prod_path: Path, exceptions_file: Path | None) -> list[Finding]:
    exceptions = load_exceptions(exceptions_file, DIFF_DIMENSIONS) if exceptions_file else []
    dev, prod = load_report(dev_path), load_report(prod_path)
    for path, report, want in ((dev_path, dev, "dev"), (prod_path, prod, "prod")):
        if report["environment"] != want:
            raise InputError(path, f"environment is {report['environment']!r}; expected {want!r} in this position")
    return apply_exceptions(diff_reports(dev, prod), exceptions)
