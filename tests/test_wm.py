"""Working memory in a real Redis: bounded, expiring, and tenant-scoped."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from brain.embeddings import HashingEmbedder
from brain.wm import MIN_WM_BYTES, WorkingMemory
from localservers.servers import RedisServer

E = HashingEmbedder(64)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def _add(wm: WorkingMemory, tenant: str, item_id: str, text: str) -> int:
    return await wm.add(tenant, item_id, text, {"k": item_id}, 0.5, E.embed(text))


async def test_capacity_evicts_oldest(redis: Redis, tenant: str) -> None:
    wm = WorkingMemory(redis, 64, capacity=3, ttl_seconds=600)
    counts = [await _add(wm, tenant, f"{i:032x}", f"item number {i}") for i in range(5)]
    assert counts == [1, 2, 3, 3, 3]
    assert sorted(i.id for i in await wm.items(tenant)) == [f"{i:032x}" for i in (2, 3, 4)]


async def test_recall_ranks_by_similarity(redis: Redis, tenant: str) -> None:
    wm = WorkingMemory(redis, 64, capacity=10, ttl_seconds=600)
    await _add(wm, tenant, "a" * 32, "feed the hungry cat")
    await _add(wm, tenant, "b" * 32, "file the tax return")
    hits = await wm.recall(tenant, E.embed("the cat is hungry"), top_k=2)
    assert [item.id for item, _ in hits] == ["a" * 32, "b" * 32]
    assert hits[0][1] > hits[1][1]


async def test_tenants_never_see_each_other(redis: Redis, tenant: str) -> None:
    wm = WorkingMemory(redis, 64, capacity=10, ttl_seconds=600)
    await _add(wm, tenant, "c" * 32, "a secret of tenant A")
    assert await wm.items(tenant + "-other") == []
    assert await wm.recall(tenant + "-other", E.embed("secret of tenant A"), 5) == []
    assert not await wm.delete(tenant + "-other", "c" * 32)
    assert [i.id for i in await wm.items(tenant)] == ["c" * 32]


async def test_expired_items_are_skipped_and_purged(redis: Redis, tenant: str) -> None:
    wm = WorkingMemory(redis, 64, capacity=10, ttl_seconds=600)
    await _add(wm, tenant, "d" * 32, "old news")
    # Age the item by rewriting its timestamp rather than sleeping: tests do not depend on timing.
    key = f"sb:wm:{{{tenant}}}:items"
    import json

    data = json.loads(await redis.hget(key, "d" * 32))
    data["ts"] = time.time() - 601
    await redis.hset(key, "d" * 32, json.dumps(data))
    await redis.zadd(f"sb:wm:{{{tenant}}}:order", {"d" * 32: data["ts"]})
    assert await wm.items(tenant) == []
    await _add(wm, tenant, "e" * 32, "fresh news")  # an insert purges what has expired
    assert not await redis.hexists(key, "d" * 32)
    assert await redis.ttl(key) > 0


async def test_delete(redis: Redis, tenant: str) -> None:
    wm = WorkingMemory(redis, 64, capacity=10, ttl_seconds=600)
    await _add(wm, tenant, "f" * 32, "to be deleted")
    assert await wm.delete(tenant, "f" * 32)
    assert not await wm.delete(tenant, "f" * 32)


async def test_the_byte_budget_evicts_the_tenants_own_oldest_items(redis: Redis, tenant: str) -> None:
    """A tenant's working memory is bounded in bytes too: big items push out its own oldest ones, never the one just
    written and never another tenant's. Before the budget, 256 items of 1.6 MB each could sit in one tenant's hash."""
    wm = WorkingMemory(redis, 64, capacity=1000, ttl_seconds=600, max_bytes=MIN_WM_BYTES)
    other = tenant + "-other"
    await _add(wm, other, "f" * 32, "the neighbour's item")
    big = "z" * 400_000  # about 0.4 MB stored: five of them exceed the 2 MiB budget
    counts = [await _add(wm, tenant, f"{i:032x}", big + str(i)) for i in range(8)]
    kept = sorted(i.id for i in await wm.items(tenant))
    assert counts[-1] == len(kept) < 8 and f"{7:032x}" in kept  # the newest stays
    assert kept == [f"{i:032x}" for i in range(8 - len(kept), 8)]  # what went is the oldest
    stored = sum([await redis.hstrlen(f"sb:wm:{{{tenant}}}:items", item_id) for item_id in kept])
    assert stored <= MIN_WM_BYTES
    assert [i.id for i in await wm.items(other)] == ["f" * 32]


async def test_one_item_of_the_largest_size_always_fits(redis: Redis, tenant: str) -> None:
    wm = WorkingMemory(redis, 64, capacity=10, ttl_seconds=600, max_bytes=1)  # raised to the floor
    wide = "\U0001F600"
    metadata = {f"k{i:02d}" + "m" * 61: wide * 1024 for i in range(32)}
    assert await wm.add(tenant, "a" * 32, wide * 100_000, metadata, 0.5, E.embed("x")) == 1
    assert [i.id for i in await wm.items(tenant)] == ["a" * 32]
