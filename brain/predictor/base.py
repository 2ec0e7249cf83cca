"""The predictor interface the API depends on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from brain.embeddings import Vector
from brain.roundtrip import Command


@dataclass(frozen=True)
class Prediction:
    """Mahalanobis surprise of one vector: `surprise = d2 / (d2 + dim)`, in [0, 1)."""

    d2: float
    surprise: float


class Predictor(Protocol):
    provider: str
    real: bool

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def warmed(self) -> bool: ...

    def observe_commands(self, tenant: str, vec: Vector) -> list[Command]:
        """The Redis commands that fold `vec` into the tenant's statistics (possibly none), for the caller to send
        with its own in one round trip (brain.roundtrip)."""
        ...

    async def scored(self, replies: list[Any], vec: Vector) -> Prediction:
        """Score `vec` against the tenant's statistics, from the raw replies to `observe_commands`."""
        ...
