"""A parity finding: one point of comparison between dev (compose) and prod (Kubernetes)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

DIMENSIONS = (
    "mapping",
    "image",
    "ports",
    "env",
    "health",
    "resources",
    "storage",
    "dependencies",
    "connectivity",
    "security",
    "ingress",
)


class Status(StrEnum):
    OK = "ok"  # the two environments agree
    DRIFT = "drift"  # they differ and no exception accepts it
    ACCEPTED = "accepted"  # they differ and the exceptions file says why that is fine
    STALE = "stale"  # an exception that matches no difference any more

    @property
    def failing(self) -> bool:
        return self in (Status.DRIFT, Status.STALE)


@dataclass(frozen=True)
class Finding:
    dimension: str
    subject: str
    dev: str | None
    prod: str | None
    status: Status
    reason: str | None = None
    # A hard finding cannot be accepted by an exception, however exactly it names it: strict-real settings,
    # literal credentials, privileged containers, a prod limit below the dev limit, a used flow or DNS blocked
    # in prod, prod readiness weaker than the dev healthcheck. Those must never differ that way.
    hard: bool = False
    # Where the prod side is written: `FILE (KIND/NAME)` of k8s/, from kustomize's origins (parity/provenance.py).
    prod_from: str | None = None

    def with_status(self, status: Status, reason: str | None) -> Finding:
        return replace(self, status=status, reason=reason)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dimension": self.dimension,
            "subject": self.subject,
            "dev": self.dev,
            "prod": self.prod,
            "status": self.status.value,
        }
        if self.reason:
            out["reason"] = self.reason
        if self.hard:
            out["hard"] = True
        if self.prod_from:
            out["prod_from"] = self.prod_from
        return out


def ok(dimension: str, subject: str, dev: str | None, prod: str | None, reason: str | None = None) -> Finding:
    return Finding(dimension, subject, dev, prod, Status.OK, reason)


def drift(
    dimension: str, subject: str, dev: str | None, prod: str | None, reason: str, *, hard: bool = False
) -> Finding:
    return Finding(dimension, subject, dev, prod, Status.DRIFT, reason, hard)


def hard_drift(dimension: str, subject: str, dev: str | None, prod: str | None, reason: str) -> Finding:
    """A drift no exception can accept; the reason says so, for a reader who would otherwise try to write one."""
    return drift(dimension, subject, dev, prod, f"{reason} (hard: no exception can accept it)", hard=True)


def compare(
    dimension: str, subject: str, dev: str | None, prod: str | None, reason: str = "values differ"
) -> Finding:
    """OK when the two displayed values are equal, else drift."""
    if dev == prod:
        return ok(dimension, subject, dev, prod)
    return drift(dimension, subject, dev, prod, reason)
