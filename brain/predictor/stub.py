"""A stub predictor for non-strict dev runs only. It never learns and never claims to be real."""

from __future__ import annotations

from typing import Any

from brain.embeddings import Vector
from brain.predictor.base import Prediction
from brain.roundtrip import Command


class StubPredictor:
    provider = "stub"
    real = False

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def warmed(self) -> bool:
        return True

    def observe_commands(self, tenant: str, vec: Vector) -> list[Command]:
        """Nothing to learn, so nothing to send."""
        return []

    async def scored(self, replies: list[Any], vec: Vector) -> Prediction:
        return Prediction(d2=0.0, surprise=0.0)
