"""The mahal predictor against a real Redis: it learns, tenants are separate, replicas share statistics."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import numpy as np
import pytest
from redis.asyncio import Redis

from brain.embeddings import HashingEmbedder
from brain.predictor import MahalPredictor
from brain.predictor.mahal import stats_key
from tests.helpers.servers import RedisServer


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


async def test_two_replicas_agree_and_lose_no_updates(redis_server: RedisServer, tenant: str) -> None:
    clients = [Redis.from_url(redis_server.url) for _ in range(2)]
    replicas = [MahalPredictor(c, 64, alpha=0.1) for c in clients]
    for r in replicas:
        await r.start()
    try:
        e = HashingEmbedder(64)
        await asyncio.gather(*(replicas[i % 2].observe(tenant, e.embed(f"event {i % 5}")) for i in range(40)))
        count = await clients[0].hget(stats_key(tenant), "n")
        assert int(count or 0) == 40  # every concurrent update from both replicas was applied
        vec = e.embed("event 1")
        a = await replicas[0].statistics(tenant)
        b = await replicas[1].statistics(tenant)
        np.testing.assert_array_equal(a[0], b[0])
        assert vec.shape == a[0].shape
    finally:
        for r, c in zip(replicas, clients, strict=True):
            await r.stop()
            await c.aclose()
