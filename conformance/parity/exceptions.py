"""The exceptions file: accepted differences, each named exactly, with its reason; stale entries are reported.

Format (conformance/parity-exceptions.yaml; conformance/diff-exceptions.yaml for `conformance diff` shares it):

    exceptions:
      - dimension: env                              # one of findings.DIMENSIONS (`check` for `diff`)
        subject: somabrain/SOMABRAIN_DISABLE_AUTH   # the exact finding subject; or `subjects:` [exact subjects]
        dev: "1"                                    # required: the exact dev value accepted (null: absent in dev)
        prod: "0"                                   # required: the exact prod value accepted (null: absent in prod)
        reason: auth is disabled in dev and enabled in prod (DESIGN.md)

An exception is a reviewed statement about one known difference, so it names exactly what it accepts: a drift
finding is accepted only when its dimension, subject, dev and prod all equal the exception's. The values are
the strings the gate reports (`python -m conformance parity --no-exceptions --format json` lists them); one
entry with several `subjects` accepts the same dev and prod value for each. A pattern (`sb_redis/*`) would
accept differences nobody has reviewed yet, and an open value (only `dev:`) would accept any prod value, e.g. a
prod memory limit cut below the one dev runs with. So the loader refuses (InputError, exit 2): a subject with a
glob character (`*?[`), an entry without `dev:` or `prod:`, a value that is not a string or null (YAML would
turn `yes` into True), and a subject listed twice for one dimension (one finding has one pair of values).

When either side changes, the finding no longer matches: it is drift again, and each subject that its
exception accepted nothing for is reported `stale`, which fails the gate too (update the entry or remove it).
Hard findings (Finding.hard: strict-real settings, literal credentials, privileged containers, a prod limit
below the dev limit, a used flow or DNS blocked in prod, prod readiness weaker than the dev healthcheck) are
never accepted, not even by an exception that names them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from conformance.loaders.errors import InputError
from conformance.parity.findings import Finding, Status

ALLOWED_KEYS = {"dimension", "subject", "subjects", "dev", "prod", "reason"}
GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class AcceptedDifference:
    index: int
    dimension: str
    subjects: tuple[str, ...]
    dev: str | None
    prod: str | None
    reason: str

    def matches(self, finding: Finding) -> bool:
        return (
            finding.dimension == self.dimension
            and finding.subject in self.subjects
            and finding.dev == self.dev
            and finding.prod == self.prod
        )


def load_exceptions(path: Path | None, dimensions: tuple[str, ...]) -> list[AcceptedDifference]:
    """Read and validate the exceptions file; no file (None) means no exceptions."""
    if path is None:
        return []
    entries = _entries(path)
    out = [_entry(path, index, entry, dimensions) for index, entry in enumerate(entries)]
    _refuse_duplicates(path, out)
    return out


def _entries(path: Path) -> list[Any]:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(path, "exceptions file does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read exceptions file: {exc}") from exc
    except yaml.YAMLError as exc:
        raise InputError(path, f"malformed YAML: {exc}") from exc
    if doc is None:
        return []
    if not isinstance(doc, dict) or not isinstance(doc.get("exceptions", []), list):
        raise InputError(path, "expected a mapping with an `exceptions:` list")
    return list(doc.get("exceptions") or [])


def _entry(path: Path, index: int, entry: Any, dimensions: tuple[str, ...]) -> AcceptedDifference:
    where = f"exceptions[{index}]"
    if not isinstance(entry, dict):
        raise InputError(path, f"{where} must be a mapping")
    unknown = set(entry) - ALLOWED_KEYS
    if unknown:
        raise InputError(path, f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(ALLOWED_KEYS)})")
    dimension = entry.get("dimension")
    if dimension not in dimensions:
        raise InputError(path, f"{where}: dimension {dimension!r} is not one of {', '.join(dimensions)}")
    subjects = _subjects(path, where, entry)
    where = f"{where} ({subjects[0]})"
    reason = entry.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise InputError(path, f"{where}: every exception needs a non-empty `reason`")
    return AcceptedDifference(
        index=index,
        dimension=dimension,
        subjects=subjects,
        dev=_value(path, where, entry, "dev"),
        prod=_value(path, where, entry, "prod"),
        reason=" ".join(reason.split()),
    )


def _subjects(path: Path, where: str, entry: dict[str, Any]) -> tuple[str, ...]:
    if "subject" in entry and "subjects" in entry:
        raise InputError(path, f"{where}: give `subject` or `subjects`, not both")
    subjects = entry["subjects"] if "subjects" in entry else [entry.get("subject")]
    if not isinstance(subjects, list) or not subjects or not all(isinstance(s, str) and s for s in subjects):
        raise InputError(path, f"{where}: needs `subject` (an exact finding subject) or `subjects` (a list of them)")
    for subject in subjects:
        if GLOB_CHARACTERS & set(subject):
            raise InputError(
                path,
                f"{where}: subject {subject!r} is a pattern; subjects are exact, so list the exact subjects it "
                "should accept (`--no-exceptions --format json` shows the ones the gate reports)",
            )
    return tuple(subjects)


def _value(path: Path, where: str, entry: dict[str, Any], side: str) -> str | None:
    if side not in entry:
        raise InputError(
            path,
            f"{where}: needs `{side}:`, the exact {side} value it accepts (null when absent in {side}); an "
            "exception pins both sides, so that a change on either one is reported again",
        )
    value = entry[side]
    if value is not None and not isinstance(value, str):
        raise InputError(
            path, f"{where}: `{side}: {value!r}` is not a string; quote it (values are compared as exact strings)"
        )
    return value


def _refuse_duplicates(path: Path, exceptions: list[AcceptedDifference]) -> None:
    seen: dict[tuple[str, str], int] = {}
    for exc in exceptions:
        for subject in exc.subjects:
            first = seen.setdefault((exc.dimension, subject), exc.index)
            if first != exc.index or exc.subjects.count(subject) > 1:
                raise InputError(
                    path,
                    f"exceptions[{exc.index}]: {exc.dimension} {subject} is already listed (exceptions[{first}]); "
                    "one finding has one dev and one prod value, so one exception",
                )


def apply_exceptions(findings: list[Finding], exceptions: list[AcceptedDifference]) -> list[Finding]:
    """Mark the drifts an exception accepts; append a `stale` finding per exception subject that accepted none."""
    used: set[tuple[int, str]] = set()
    out = [_apply(finding, exceptions, used) for finding in findings]
    out.extend(
        Finding(
            exc.dimension,
            subject,
            exc.dev,
            exc.prod,
            Status.STALE,
            f"exception #{exc.index} matches no difference any more (no drift with exactly these values); "
            f"update or remove it ({exc.reason})",
        )
        for exc in exceptions
        for subject in exc.subjects
        if (exc.index, subject) not in used
    )
    return out


def _apply(finding: Finding, exceptions: list[AcceptedDifference], used: set[tuple[int, str]]) -> Finding:
    if finding.status is not Status.DRIFT:
        return finding
    match = next((e for e in exceptions if e.matches(finding)), None)
    if match is None:
        return finding
    if finding.hard:
        return finding.with_status(
            Status.DRIFT, f"{finding.reason} (exception #{match.index} cannot accept a hard finding)"
        )
    used.add((match.index, finding.subject))
    return finding.with_status(Status.ACCEPTED, f"{match.reason} [was: {finding.reason}]")
