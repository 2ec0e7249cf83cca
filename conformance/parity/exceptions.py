"""The exceptions file: accepted differences, each with its reason; stale entries are reported.

Format (conformance/parity-exceptions.yaml):

    exceptions:
      - dimension: env                       # one of findings.DIMENSIONS (or `check` for `diff`)
        subject: somabrain/SOMABRAIN_DISABLE_AUTH   # an fnmatch glob; or `subjects:` [globs]
        dev: "1"                             # optional: accept only this exact dev value
        prod: "0"                            # optional: accept only this exact prod value
        reason: auth is disabled in dev and enabled in prod (DESIGN.md)

An exception accepts every drift finding it matches (dimension, a subject glob, and the pinned values
when given). Hard findings (strict-real settings, literal credentials, privileged containers) are
never accepted. An exception that matches no drift is reported as `stale`, which fails the gate: when a
difference is fixed, its exception must go too.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

import yaml

from conformance.loaders.errors import InputError
from conformance.parity.findings import Finding, Status

ALLOWED_KEYS = {"dimension", "subject", "subjects", "dev", "prod", "reason"}


@dataclass(frozen=True)
class AcceptedDifference:
    index: int
    dimension: str
    subjects: tuple[str, ...]
    reason: str
    dev: str | None = None
    prod: str | None = None
    pinned_dev: bool = False
    pinned_prod: bool = False

    def matches(self, finding: Finding) -> bool:
        if finding.dimension != self.dimension:
            return False
        if not any(fnmatch.fnmatchcase(finding.subject, s) for s in self.subjects):
            return False
        if self.pinned_dev and finding.dev != self.dev:
            return False
        return not (self.pinned_prod and finding.prod != self.prod)

    @property
    def label(self) -> str:
        return self.subjects[0] if len(self.subjects) == 1 else "{" + ", ".join(self.subjects) + "}"


def load_exceptions(path: Path | None, dimensions: tuple[str, ...]) -> list[AcceptedDifference]:
    """Read and validate the exceptions file; a missing default file means no exceptions."""
    if path is None:
        return []
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
    out: list[AcceptedDifference] = []
    for index, entry in enumerate(doc.get("exceptions") or []):
        where = f"exceptions[{index}]"
        if not isinstance(entry, dict):
            raise InputError(path, f"{where} must be a mapping")
        unknown = set(entry) - ALLOWED_KEYS
        if unknown:
            raise InputError(path, f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(ALLOWED_KEYS)})")
        dimension = entry.get("dimension")
        if dimension not in dimensions:
            raise InputError(path, f"{where}: dimension {dimension!r} is not one of {', '.join(dimensions)}")
        subjects = entry.get("subjects") or ([entry["subject"]] if entry.get("subject") else [])
        if not subjects or not all(isinstance(s, str) and s for s in subjects):
            raise InputError(path, f"{where}: needs `subject` (a glob) or `subjects` (a list of globs)")
        reason = entry.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise InputError(path, f"{where} ({subjects[0]}): every exception needs a non-empty `reason`")
        out.append(
            AcceptedDifference(
                index=index,
                dimension=dimension,
                subjects=tuple(subjects),
                reason=" ".join(reason.split()),
                dev=None if entry.get("dev") is None else str(entry["dev"]),
                prod=None if entry.get("prod") is None else str(entry["prod"]),
                pinned_dev="dev" in entry,
                pinned_prod="prod" in entry,
            )
        )
    return out


def apply_exceptions(findings: list[Finding], exceptions: list[AcceptedDifference]) -> list[Finding]:
    """Mark drifts that an exception accepts; append a `stale` finding per exception that matched none."""
    used: set[int] = set()
    out: list[Finding] = []
    for finding in findings:
        if finding.status is Status.DRIFT:
            match = next((e for e in exceptions if e.matches(finding)), None)
            if match is not None:
                if finding.hard:
                    finding = finding.with_status(
                        Status.DRIFT, f"{finding.reason} (exception #{match.index} cannot accept a hard finding)"
                    )
                else:
                    used.add(match.index)
                    finding = finding.with_status(Status.ACCEPTED, f"{match.reason} [was: {finding.reason}]")
        out.append(finding)
    for exc in exceptions:
        if exc.index not in used:
            out.append(
                Finding(
                    exc.dimension,
                    exc.label,
                    exc.dev,
                    exc.prod,
                    Status.STALE,
                    f"exception #{exc.index} matches no difference any more; remove it ({exc.reason})",
                )
            )
    return out
