"""The micro-batcher: concurrent requests share batches, and batched results equal one-at-a-time results."""

from __future__ import annotations

import asyncio

import numpy as np
from prometheus_client import REGISTRY

from brain.predictor.batcher import MicroBatcher, bucket_sizes
from brain.predictor.numerics import surprise_batch, surprise_numpy


def test_bucket_sizes_are_powers_of_two_up_to_max() -> None:
    assert bucket_sizes(64) == [1, 2, 4, 8, 16, 32, 64]
    assert bucket_sizes(48) == [1, 2, 4, 8, 16, 32, 48]
    assert bucket_sizes(1) == [1]


async def test_concurrent_requests_are_batched_and_exact() -> None:
    batcher = MicroBatcher(surprise_batch, 32, max_batch=16)
    batcher.warm_up()
    batcher.start()
    try:
        vectors_before = REGISTRY.get_sample_value("somabrain_predictor_batch_size_sum") or 0.0
        batches_before = REGISTRY.get_sample_value("somabrain_predictor_batch_size_count") or 0.0
        rng = np.random.default_rng(0)
        xs = rng.normal(size=(40, 32)).astype(np.float32)
        mus = rng.normal(size=(40, 32)).astype(np.float32)
        vars_ = rng.uniform(0.1, 1.0, size=(40, 32)).astype(np.float32)
        results = await asyncio.gather(*(batcher.score(xs[i], mus[i], vars_[i]) for i in range(40)))
        d2_ref, s_ref = surprise_numpy(xs, mus, vars_)
        np.testing.assert_allclose([r[0] for r in results], d2_ref, rtol=1e-4)
        np.testing.assert_allclose([r[1] for r in results], s_ref, rtol=1e-5)
        assert batcher.items == 40
        assert batcher.batches < 40  # shared: 40 concurrent callers needed fewer than 40 computations
        # the batch-size histogram says the same to an operator
        assert REGISTRY.get_sample_value("somabrain_predictor_batch_size_sum") == vectors_before + 40
        assert REGISTRY.get_sample_value("somabrain_predictor_batch_size_count") == batches_before + batcher.batches
    finally:
        await batcher.stop()


async def test_a_failing_batch_fails_its_callers_instead_of_hanging() -> None:
    def broken(x: np.ndarray, mu: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise ValueError("boom")

    batcher = MicroBatcher(broken, 8, max_batch=4)
    batcher.start()
    try:
        zeros = np.zeros(8, dtype=np.float32)
        results = await asyncio.gather(*(batcher.score(zeros, zeros, zeros) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in results)
    finally:
        await batcher.stop()
