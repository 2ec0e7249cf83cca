"""One comparator per dimension: each takes the ParityContext and returns its findings."""

from __future__ import annotations

from collections.abc import Callable

from conformance.parity.comparators import (
    connectivity,
    dependencies,
    env,
    health,
    image,
    ingress,
    mapping,
    ports,
    resources,
    security,
    storage,
)
from conformance.parity.context import ParityContext
from conformance.parity.findings import Finding

Comparator = Callable[[ParityContext], list[Finding]]

COMPARATORS: dict[str, Comparator] = {
    "mapping": mapping.compare,
    "image": image.compare,
    "ports": ports.compare,
    "env": env.compare,
    "health": health.compare,
    "resources": resources.compare,
    "storage": storage.compare,
    "dependencies": dependencies.compare,
    "connectivity": connectivity.compare,
    "security": security.compare,
    "ingress": ingress.compare,
}

__all__ = ["COMPARATORS", "Comparator"]
