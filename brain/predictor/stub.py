"""A stub predictor for non-strict dev runs only. It never learns and never claims to be real."""

from __future__ import annotations

from typing import Any

from redis.asyncio.client import Pipeline

from brain.embeddings import Vector
from brain.predictor.base import Prediction


class StubPredictor:
    provider = "stub"
    real = False

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def warmed(self) -> bool:
        return True

    def queue_observe(self, pipe: Pipeline, tenant: str, vec: Vector) -> None:
        """Nothing to learn, so nothing to queue."""

    async def scored(self, replies: list[Any], vec: Vector) -> Prediction:
        return Prediction(d2=0.0, surprise=0.0)
