"""Counting what a schemathesis run did, so the api checks report real numbers whether they pass or fail.

Hypothesis stops a run at the first failing case (after shrinking it), so counts taken after the run would only
exist when it passed. The tally is filled as calls happen and read in a `finally`: a failed check's report then
says how many cases ran, which checks failed and how often, and which unexpected errors occurred.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemathesis.core.failures import Failure, FailureGroup


@dataclass
class ApiTally:
    """Calls, responses and check failures of one api check, as they happened."""

    cases: int = 0
    status_codes: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def response(self, status_code: int, outcome: str | None = None) -> None:
        """Count one answered call; `outcome` names it (e.g. "POST /remember -> 201") for the stateful phase."""
        self.status_codes[status_code] += 1
        if outcome is not None:
            self.outcomes[outcome] += 1

    def run(self, step: Callable[[], None]) -> None:
        """Run one call-and-validate step, counting schemathesis' check failures by title and anything else as an
        error with its message; either is re-raised, so hypothesis still shrinks it and the test still fails."""
        self.cases += 1
        try:
            step()
        except FailureGroup as group:
            self.failures.update(failure.title for failure in group.exceptions)
            raise
        except Failure as failure:
            self.failures[failure.title] += 1
            raise
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            raise

    def observed(self) -> dict[str, Any]:
        """The report's `observed`: `failures` counts failing check results, including hypothesis' replays of a
        failing case while it shrinks it, so one defect may count more than once (`failed_checks` names them)."""
        out: dict[str, Any] = {
            "cases": self.cases,
            "failures": self.failures.total(),
            "errors": len(self.errors),
            "status_codes": dict(sorted(self.status_codes.items())),
        }
        if self.outcomes:
            out["by_outcome"] = dict(sorted(self.outcomes.items()))
        if self.failures:
            out["failed_checks"] = dict(sorted(self.failures.items()))
        if self.errors:
            out["error_messages"] = sorted(set(self.errors))
        return out
