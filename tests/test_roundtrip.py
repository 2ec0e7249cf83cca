"""Commands in one round trip against a real redis-server: replies in order, and a failed or cancelled round trip
never leaves a reply behind for the next user of the connection.

Each client here has a pool of one connection, so whatever follows a round trip runs on the connection it used.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from brain.roundtrip import RoundTrips, hash_reply, round_trip
from localservers.servers import RedisServer, free_port


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis(connection_pool=ConnectionPool.from_url(redis_server.url, max_connections=1))
    yield client
    await client.aclose()


async def test_replies_come_back_in_order(redis: Redis, tenant: str) -> None:
    await redis.hset(f"{tenant}:h", mapping={"a": "1", "b": "2"})
    replies = await round_trip(redis, [("HGETALL", f"{tenant}:h"), ("INCR", f"{tenant}:n"),
                                       ("INCRBY", f"{tenant}:n", 5), ("GET", f"{tenant}:absent"),
                                       ("INCRBYFLOAT", f"{tenant}:f", 0.25), ("SET", f"{tenant}:b", b"\x00\xff"),
                                       ("GET", f"{tenant}:b")])
    assert hash_reply(replies[0]) == {b"a": b"1", b"b": b"2"}
    assert replies[1:] == [1, 6, None, b"0.25", b"OK", b"\x00\xff"]
    assert await round_trip(redis, []) == []


async def test_an_argument_redis_cannot_take_is_a_data_error_before_anything_is_sent(redis: Redis,
                                                                                     tenant: str) -> None:
    with pytest.raises(DataError, match="must be str, int, float or bytes"):
        await round_trip(redis, [("SET", f"{tenant}:k", "sent"), ("SET", f"{tenant}:k", None)])
    assert await redis.get(f"{tenant}:k") is None


async def test_hash_reply_reads_both_protocols(redis_server: RedisServer, tenant: str) -> None:
    await (client := Redis.from_url(redis_server.url, protocol=3)).hset(f"{tenant}:h", "k", "v")
    try:
        (raw,) = await round_trip(client, [("HGETALL", f"{tenant}:h")])
        assert isinstance(raw, dict) and hash_reply(raw) == {b"k": b"v"}
    finally:
        await client.aclose()
    assert hash_reply([b"k", b"v", b"k2", b"v2"]) == {b"k": b"v", b"k2": b"v2"}


async def test_an_error_reply_raises_and_leaves_nothing_unread(redis: Redis, tenant: str) -> None:
    """The GET after the failing INCR was sent and answered; had its reply stayed on the connection, the next call
    would read "stale" instead of its own reply."""
    await redis.set(f"{tenant}:text", "not a number")
    await redis.set(f"{tenant}:stale", "stale")
    await redis.set(f"{tenant}:fresh", "fresh")
    with pytest.raises(ResponseError, match="not an integer"):
        await round_trip(redis, [("INCR", f"{tenant}:text"), ("GET", f"{tenant}:stale")])
    assert await redis.get(f"{tenant}:fresh") == b"fresh"


async def test_a_cancelled_round_trip_leaves_nothing_unread(redis: Redis, tenant: str) -> None:
    """Cancelled while Redis holds the reply back (a blocking pop), then the list gets a value: a connection kept
    open would take that value and deliver the pop's reply to the next call. (redis-py's read_response closes the
    connection on cancellation itself; this holds round_trip to that.)"""
    async with Redis.from_url(_url(redis)) as other:
        waiting = asyncio.create_task(round_trip(redis, [("BLPOP", f"{tenant}:q", 5)]))
        # Until Redis holds the BLPOP: that state is the server's, so there is no event to wait on.
        while int((await other.info("clients"))["blocked_clients"]) == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await other.rpush(f"{tenant}:q", "late")
    assert await redis.get(f"{tenant}:absent") is None
    assert await redis.lrange(f"{tenant}:q", 0, -1) == [b"late"]  # nobody popped it


async def test_an_unreachable_server_is_a_connection_error() -> None:
    client = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    try:
        with pytest.raises(RedisConnectionError):
            await round_trip(client, [("PING",)])
    finally:
        await client.aclose()


async def test_a_round_trip_past_its_timeout_raises_and_leaves_nothing_unread(redis_server: RedisServer,
                                                                               tenant: str) -> None:
    """RoundTrips' connections have no socket timeout: its own bound must end the wait, close the connection (or
    the blocked pop would take the value pushed later) and say so as redis-py's TimeoutError."""
    trips = RoundTrips(redis_server.url, timeout=0.2)
    try:
        with pytest.raises(RedisTimeoutError, match=r"did not answer within 0\.2 s"):
            await trips([("BLPOP", f"{tenant}:q", 5)])
        assert await trips([("RPUSH", f"{tenant}:q", "late"), ("LRANGE", f"{tenant}:q", 0, -1)]) == [1, [b"late"]]
    finally:
        await trips.aclose()


async def test_connections_open_across_a_redis_restart_are_reconnected(tmp_path: Path) -> None:
    """Every pooled connection is at EOF once Redis restarts; none may fail the round trip it is taken for."""
    server = RedisServer(tmp_path)
    server.start()
    client = Redis.from_url(server.url)
    try:
        await asyncio.gather(*(round_trip(client, [("PING",)]) for _ in range(8)))  # eight connections, pooled
        server.stop()
        server.start()
        await asyncio.sleep(0.2)  # the event loop sees each connection's EOF
        assert await asyncio.gather(*(round_trip(client, [("PING",)]) for _ in range(8))) == [[b"PONG"]] * 8
    finally:
        await client.aclose()
        server.stop()


def _url(redis: Redis) -> str:
    kwargs = redis.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"
