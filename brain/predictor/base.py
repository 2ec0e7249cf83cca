"""The predictor interface the API depends on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio.client import Pipeline

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

    def queue_observe(self, pipe: Pipeline, tenant: str, vec: Vector) -> None:
        """Queue on `pipe` whatever folding `vec` into the tenant's statistics needs (possibly nothing), so the
        caller's own Redis reads share the round trip."""
        ...

    async def scored(self, replies: list[Any], vec: Vector) -> Prediction:
        """Score `vec` against the tenant's statistics, from the replies of what `queue_observe` queued."""
        ...
