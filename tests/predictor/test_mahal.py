"""The mahal predictor against a real Redis: it learns, tenants are separate, replicas share statistics, and the
Lua EWMA it serves is the numpy reference `ewma_update`."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import numpy as np
import pytest
from redis.asyncio import Redis

from brain.embeddings import HashingEmbedder, from_bytes
from brain.predictor import MahalPredictor
from brain.predictor.mahal import stats_key
from brain.predictor.numerics import F32, ewma_update, prior, surprise_numpy
from localservers.servers import RedisServer


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def predictor(redis: Redis) -> AsyncIterator[MahalPredictor]:
    p = MahalPredictor(redis, 256, alpha=0.1)
    await p.start()
    yield p
    await p.stop()


async def test_repeated_input_grows_less_surprising(predictor: MahalPredictor, tenant: str) -> None:
    vec = HashingEmbedder(256).embed("water the plants every morning")
    seen = [(await predictor.observe(tenant, vec)).surprise for _ in range(8)]
    assert seen[0] == pytest.approx(0.5, abs=1e-4)  # the prior: a unit vector against variance 1/dim
    assert all(later < earlier for earlier, later in itertools.pairwise(seen)), seen


async def test_novel_input_is_surprising_after_learning(predictor: MahalPredictor, tenant: str) -> None:
    e = HashingEmbedder(256)
    for _ in range(10):
        await predictor.observe(tenant, e.embed("water the plants every morning"))
    familiar = (await predictor.observe(tenant, e.embed("water the plants every morning"))).surprise
    novel = (await predictor.observe(tenant, e.embed("quarterly tax filing deadline"))).surprise
    assert novel > 0.5 > familiar  # the prior says 0.5; learning moves each side its own way


async def test_tenants_do_not_share_statistics(predictor: MahalPredictor, tenant: str) -> None:
    vec = HashingEmbedder(256).embed("only tenant A has seen this")
    for _ in range(5):
        await predictor.observe(tenant, vec)
    other = (await predictor.observe(tenant + "-b", vec)).surprise
    assert other == pytest.approx(0.5, abs=1e-4)


# The served EWMA runs in Lua (double arithmetic, stored as float32); the reference `ewma_update` runs in numpy
# float32. One step differs by at most a rounding of each, and the update is a contraction, so the gap stays a few
# float32 ulps however long the sequence: rtol 1e-5 with atol 1e-7 (var is ~1/dim) is loose for that and far too
# tight for any other update rule.
RTOL, ATOL = 1e-5, 1e-7


def seeded_sequence(seed: int, count: int, dim: int) -> list[F32]:
    """Random, non-unit inputs, so that every term of the update rule (not only the unit-vector case) is exercised."""
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=0.5, size=dim).astype(np.float32) for _ in range(count)]


def numpy_replay(sequence: list[F32], dim: int, alpha: float) -> tuple[F32, F32]:
    """What the statistics must be after `sequence`, according to the numpy reference."""
    mu, var = prior(dim)
    for x in sequence:
        mu, var = ewma_update(x, mu, var, alpha)
    return mu, var


def assert_statistics_match(served: tuple[F32, F32], reference: tuple[F32, F32]) -> None:
    for got, want in zip(served, reference, strict=True):
        assert got.dtype == want.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(("seed", "alpha"), [(7, 0.1), (11, 0.35)])
async def test_lua_update_matches_numpy_reference(redis: Redis, tenant: str, seed: int, alpha: float) -> None:
    """Step by step, the Lua script's statistics are the numpy reference's, and each vector is scored against
    the statistics from before it (the JAX score agrees with the numpy score of the reference state)."""
    dim = 32
    served = MahalPredictor(redis, dim, alpha=alpha)
    await served.start()
    try:
        mu, var = prior(dim)
        for x in seeded_sequence(seed, 25, dim):
            prediction = await served.observe(tenant, x)
            d2, _ = surprise_numpy(x[None], mu[None], var[None])
            assert prediction.d2 == pytest.approx(float(d2[0]), rel=1e-4)
            mu, var = ewma_update(x, mu, var, alpha)
            assert_statistics_match(await served.statistics(tenant), (mu, var))
    finally:
        await served.stop()


async def test_two_replicas_agree_and_lose_no_updates(redis_server: RedisServer, tenant: str) -> None:
    """Concurrent observations from two replicas all land. Every one carries the same vector, so the order Redis
    applies them in does not matter and the result must equal 40 numpy steps: a lost update would show there."""
    dim, alpha, count = 64, 0.1, 40
    clients = [Redis.from_url(redis_server.url) for _ in range(2)]
    replicas = [MahalPredictor(c, dim, alpha=alpha) for c in clients]
    for r in replicas:
        await r.start()
    try:
        vec = HashingEmbedder(dim).embed("event 1")
        await asyncio.gather(*(replicas[i % 2].observe(tenant, vec) for i in range(count)))
        assert int(await clients[0].hget(stats_key(tenant), "n") or 0) == count
        reference = numpy_replay([vec] * count, dim, alpha)
        for r in replicas:
            assert_statistics_match(await r.statistics(tenant), reference)
    finally:
        for r, c in zip(replicas, clients, strict=True):
            await r.stop()
            await c.aclose()


async def test_alternating_replicas_match_numpy_replay(redis_server: RedisServer, tenant: str) -> None:
    """A seeded sequence observed turn by turn through two replicas leaves in Redis what a numpy replay of the same
    sequence computes: the replicas share one state and apply the reference rule to it."""
    dim, alpha = 48, 0.2
    sequence = seeded_sequence(3, 30, dim)
    clients = [Redis.from_url(redis_server.url) for _ in range(2)]
    replicas = [MahalPredictor(c, dim, alpha=alpha) for c in clients]
    for r in replicas:
        await r.start()
    try:
        for i, x in enumerate(sequence):
            await replicas[i % 2].observe(tenant, x)
        mu_raw, var_raw = await clients[1].hmget(stats_key(tenant), ["mu", "var"])
        assert isinstance(mu_raw, bytes) and isinstance(var_raw, bytes)
        held = (from_bytes(mu_raw, dim), from_bytes(var_raw, dim))
        assert_statistics_match(held, numpy_replay(sequence, dim, alpha))
    finally:
        for r, c in zip(replicas, clients, strict=True):
            await r.stop()
            await c.aclose()
