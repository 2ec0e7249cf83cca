"""Memory and CPU quantities of both worlds, in bytes and cores."""

from __future__ import annotations

import re
from decimal import InvalidOperation

from kubernetes.utils import parse_quantity

_DOCKER_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmg]?)b?\s*$", re.IGNORECASE)
_DOCKER_FACTORS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def docker_memory(value: object) -> int:
    """Compose/Docker memory (`512m`, `1g`, `1073741824`): binary units. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"not a memory size: {value!r}")
    if isinstance(value, int):
        return value
    match = _DOCKER_MEMORY.match(str(value))
    if match is None:
        raise ValueError(f"not a memory size: {value!r}")
    return int(float(match.group(1)) * _DOCKER_FACTORS[match.group(2).lower()])


def k8s_quantity(value: object) -> float:
    """A Kubernetes resource quantity (`500m`, `1Gi`, `2`, `128e6`, `123456n`) as a plain number: the kubernetes
    client's own parser (`kubernetes.utils.parse_quantity`, a Decimal), as a float. Raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not a quantity: {value!r}")
    try:
        return float(parse_quantity(value.strip() if isinstance(value, str) else value))
    except (ValueError, InvalidOperation) as exc:
        raise ValueError(f"not a Kubernetes quantity: {value!r}") from exc


def format_bytes(value: float) -> str:
    """1073741824 -> '1Gi', 536870912 -> '512Mi', 1000 -> '1000B'."""
    for unit, factor in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if value >= factor and value % factor == 0:
            return f"{int(value // factor)}{unit}"
    return f"{value:g}B"


def format_cpu(value: float) -> str:
    """0.5 -> '500m', 1.0 -> '1', 1.2 -> '1200m'."""
    if value == int(value):
        return str(int(value))
    return f"{round(value * 1000)}m"
