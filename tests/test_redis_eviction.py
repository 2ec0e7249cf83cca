"""One tenant filling working memory cannot evict another tenant's predictor state or rate-limit bucket.

A real redis-server with a small maxmemory and the eviction policy compose/ and k8s/ give it: tenant A writes
working memory until Redis has evicted keys, then tenant B's predictor statistics and tenant bucket must still be
there. Under the policy both used to have, `allkeys-lru`, the same run evicts them (the second test shows the
scenario can tell the two apart).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from redis.asyncio import Redis

from brain.embeddings import HashingEmbedder
from brain.predictor.mahal import MahalPredictor, stats_key
from brain.ratelimit import RateLimiter
from brain.wm import WorkingMemory
from localservers.servers import RedisServer

REPO = Path(__file__).resolve().parents[1]
DIM = 64


def deployed_policy() -> str:
    """The --maxmemory-policy of compose's sb_redis, which must be k8s's too."""
    compose = yaml.safe_load((REPO / "compose" / "docker-compose.yml").read_text())["services"]["sb_redis"]["command"]
    k8s = next(d for d in yaml.safe_load_all((REPO / "k8s" / "base" / "redis.yaml").read_text())
               if d and d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    policies = {args[args.index("--maxmemory-policy") + 1] for args in (compose, k8s)}
    assert len(policies) == 1, f"compose and k8s give Redis different eviction policies: {policies}"
    return policies.pop()


@pytest.fixture
def small_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, "--maxmemory", "3mb", "--maxmemory-policy", request.param)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(small_redis: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(small_redis.url)
    yield client
    await client.aclose()


async def _flood_and_survivors(redis: Redis) -> tuple[int, bool, bool]:
    """B gets predictor state and a bucket; A then floods working memory. (evicted keys, B's stats, B's bucket)."""
    embedder = HashingEmbedder(DIM)
    predictor = MahalPredictor(redis, DIM, alpha=0.05)
    limiter = RateLimiter(redis, rate=100.0, burst=200, fail_open=False)
    await predictor.start()
    try:
        await predictor.observe("tenant-b", embedder.embed("what tenant b has learnt"))
    finally:
        await predictor.stop()
    assert (await limiter.check("tenant-b")).allowed
    wm = WorkingMemory(redis, DIM, capacity=100_000, ttl_seconds=3600)
    blob = "x" * 8192
    for i in range(800):  # ~7 MB of working memory into a 3 MB Redis
        await wm.add("tenant-a", f"{i:032x}", blob, {}, 0.5, embedder.embed(f"item {i}"))
    evicted = int((await redis.info("stats"))["evicted_keys"])
    return evicted, bool(await redis.exists(stats_key("tenant-b"))), bool(await redis.exists("sb:rl:{tenant-b}"))


@pytest.mark.parametrize("small_redis", [deployed_policy()], indirect=True)
async def test_the_deployed_policy_keeps_other_tenants_state(redis: Redis) -> None:
    evicted, stats, bucket = await _flood_and_survivors(redis)
    assert evicted > 0  # Redis was full and evicted: tenant A's own working memory
    assert stats and bucket, (stats, bucket)
    assert np.isfinite(float(await redis.hget(stats_key("tenant-b"), "n") or b"nan"))


@pytest.mark.parametrize("small_redis", ["allkeys-lru"], indirect=True)
async def test_under_allkeys_lru_the_flood_evicts_them(redis: Redis) -> None:
    """The old policy, for contrast: the same flood takes B's state with it."""
    evicted, stats, bucket = await _flood_and_survivors(redis)
    assert evicted > 0 and not (stats and bucket), (evicted, stats, bucket)


@pytest.mark.parametrize("small_redis", [deployed_policy()], indirect=True)
async def test_tenant_buckets_are_durable_and_address_buckets_expire(redis: Redis) -> None:
    tenants = RateLimiter(redis, rate=100.0, burst=200, fail_open=False)
    addresses = RateLimiter(redis, rate=100.0, burst=200, fail_open=False, scope="address")
    await redis.hset("sb:rl:{tenant-c}", mapping={"tokens": "5", "ts": "0"})
    await redis.expire("sb:rl:{tenant-c}", 60)  # as an older release left it
    assert (await tenants.check("tenant-c")).allowed and (await addresses.check("10.1.2.3")).allowed
    assert await redis.ttl("sb:rl:{tenant-c}") == -1  # no TTL: volatile-lru never evicts it
    assert 0 < await redis.ttl("sb:rl:address:{10.1.2.3}") <= 3  # full again after burst/rate s, then gone
