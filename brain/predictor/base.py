"""The predictor interface the API depends on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from brain.embeddings import Vector


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

    async def observe(self, tenant: str, vec: Vector) -> Prediction:
        """Score `vec` against the tenant's statistics, then fold it into them."""
        ...
