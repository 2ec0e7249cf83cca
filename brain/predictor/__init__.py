"""Predictors score how surprising an embedding is for a tenant, and learn from it.

`mahal` (the real one) keeps per-tenant running statistics in Redis and scores with a JAX-jitted Mahalanobis
distance; `stub` exists only for non-strict runs and always says so.
"""

from brain.predictor.base import Prediction, Predictor
from brain.predictor.mahal import MahalPredictor
from brain.predictor.stub import StubPredictor

__all__ = ["MahalPredictor", "Prediction", "Predictor", "StubPredictor"]
