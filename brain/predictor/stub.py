"""A stub predictor for non-strict dev runs only. It never learns and never claims to be real."""

from __future__ import annotations

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

    async def observe(self, tenant: str, vec: Vector) -> Prediction:
        return Prediction(d2=0.0, surprise=0.0)
