"""The token buckets against a real redis-server: exact buckets, leases, and what two replicas may let through.

The limiter's clock (when a lease lapses) is a hand-moved one, so that no test depends on how fast it runs; the
bucket's own clock is Redis', and every bucket here refills too slowly (0.001 token/s) to matter.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from brain import ratelimit
from brain.ratelimit import LEASE_S, RateLimiter
from localservers.servers import RedisServer

SLOW = 0.001  # tokens per second: no refill within a test


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    # Load the script once, so that no count below includes redis-py's first EVALSHA (NOSCRIPT, then a load).
    await RateLimiter(client, SLOW, 1, False).check(key())
    yield client
    await client.aclose()


def key() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


async def evalsha_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0)) + int(stats.get("cmdstat_eval", {}).get("calls", 0))


async def takes(limiter: RateLimiter, name: str, n: int) -> list[bool]:
    return [(await limiter.check(name)).allowed for _ in range(n)]


def test_lease_size_follows_rate_and_burst(redis: Redis) -> None:
    assert RateLimiter(redis, 200.0, 400, False).lease == int(200 * LEASE_S)  # the tenant default: 10
    assert RateLimiter(redis, 1000.0, 2000, False).lease == int(1000 * LEASE_S)  # the address default: 50
    assert RateLimiter(redis, 1000.0, 8, False).lease == 2  # at most a quarter of the burst
    assert RateLimiter(redis, 39.0, 400, False).lease == 1  # slower than 2 / LEASE_S: exact
    assert RateLimiter(redis, 0.5, 3, False).lease == 1


async def test_an_exact_bucket_asks_redis_for_every_request(redis: Redis) -> None:
    limiter = RateLimiter(redis, SLOW, 3, False, clock=Clock())
    name = key()
    before = await evalsha_calls(redis)
    assert await takes(limiter, name, 4) == [True, True, True, False]
    assert await evalsha_calls(redis) - before == 4
    refused = await limiter.check(name)
    assert not refused.allowed and refused.retry_after_s >= 1


async def test_a_lease_spends_locally_until_it_is_used_up(redis: Redis) -> None:
    limiter = RateLimiter(redis, SLOW, 100, False, lease=10, clock=Clock())
    name = key()
    before = await evalsha_calls(redis)
    assert all(await takes(limiter, name, 25))
    assert await evalsha_calls(redis) - before == 3  # leases of 10, 10 and 10 (5 left in the third)
    tokens = float(await redis.hget(f"sb:rl:{{{name}}}", "tokens") or -1)
    assert 69 < tokens <= 70.01  # 100 - 30 leased (plus Redis' refill of 0.001/s)


async def test_an_unspent_lease_lapses(redis: Redis) -> None:
    clock = Clock()
    limiter = RateLimiter(redis, SLOW, 100, False, lease=10, clock=clock)
    name = key()
    assert (await limiter.check(name)).allowed  # leases 10, spends 1
    clock.now += LEASE_S * 2
    before = await evalsha_calls(redis)
    assert (await limiter.check(name)).allowed
    assert await evalsha_calls(redis) - before == 1  # the 9 left lapsed: a new lease


async def test_two_replicas_never_let_through_more_than_the_bucket(redis: Redis) -> None:
    """Two limiters on one bucket (two replicas): together they allow exactly the burst, whatever the interleaving,
    and a replica may refuse while the other still holds tokens (the cost of leasing, which the docstring names)."""
    a = RateLimiter(redis, SLOW, 10, False, lease=4, clock=Clock())
    b = RateLimiter(redis, SLOW, 10, False, lease=4, clock=Clock())
    name = key()
    allowed = {"a": 0, "b": 0}
    for who in "abba" * 3 + "a" * 6:
        limiter = a if who == "a" else b
        allowed[who] += (await limiter.check(name)).allowed
    assert allowed["a"] + allowed["b"] == 10
    assert (await b.check(name)).allowed is False and (await a.check(name)).allowed is False


async def test_a_lease_never_exceeds_what_is_left(redis: Redis) -> None:
    limiter = RateLimiter(redis, SLOW, 3, False, lease=10, clock=Clock())
    name = key()
    assert await takes(limiter, name, 5) == [True, True, True, False, False]


async def test_leases_are_bounded(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "MAX_LEASES", 3)
    limiter = RateLimiter(redis, SLOW, 100, False, lease=5, scope="address", clock=Clock())
    names = [key() for _ in range(5)]
    for name in names:
        assert (await limiter.check(name)).allowed
    assert list(limiter._leases) == names[-3:]  # the oldest dropped; their tokens lapse early


async def test_concurrent_requests_share_one_lease(redis: Redis) -> None:
    """100 requests at once on a fresh key take two leases of 50 between them, not 100 leases (which would drain a
    bucket of 2000 and refuse the rest)."""
    limiter = RateLimiter(redis, 1000.0, 2000, False, clock=Clock())
    assert limiter.lease == 50
    name = key()
    before = await evalsha_calls(redis)
    verdicts = await asyncio.gather(*(limiter.check(name) for _ in range(100)))
    assert all(v.allowed for v in verdicts)
    assert await evalsha_calls(redis) - before == 2


async def test_concurrent_requests_on_an_empty_bucket_are_all_refused(redis: Redis) -> None:
    limiter = RateLimiter(redis, SLOW, 4, False, lease=2, clock=Clock())
    name = key()
    verdicts = await asyncio.gather(*(limiter.check(name) for _ in range(10)))
    assert sum(v.allowed for v in verdicts) == 4
    assert all(v.retry_after_s >= 1 for v in verdicts if not v.allowed)
