"""Several Redis commands in one round trip, on a connection of the client's own pool, without redis-py's Pipeline.

/act sends two commands per request (working memory's read, the predictor's update). Through
`redis.pipeline(transaction=False)` they cost ~120 us of client CPU here (redis-py 8.1, Python 3.11, hiredis),
against ~55 us with `round_trip` and ~38 us through `RoundTrips` (measured with 32 concurrent callers): the pipeline
adds its deprecated-argument check, observability hooks, the retry wrapper and response callbacks on every call;
the commands are packed by hiredis (redis-py's asyncio client packs in Python); and RoundTrips' connections send
without asyncio.wait_for (below). The commands still go out in one write and their replies come back in order, as in
a pipeline.

What differs, on purpose:
- replies are raw, with no response callbacks: HGETALL is a flat `[field, value, ...]` list under RESP2 (a dict
  under RESP3), EVAL returns what the script returns;
- nothing is retried: a command may have run although its reply was lost, and re-running the predictor's update
  would fold the same vector in twice;
- on any failure (an error reply among them) the connection is closed before it goes back to the pool, since
  replies left unread would be read by the next user of that connection;
- a pooled connection the server has closed (Redis restarted) is reconnected before it is used. redis-py's pool
  does that check itself only with maintenance notifications off; under its default ("auto") it skips it and
  counts on its retries, so without this every connection open across a Redis restart failed one /act.

redis-py's exceptions propagate (ConnectionError, TimeoutError, ResponseError), as from any other call on the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.exceptions import DataError
from redis.exceptions import TimeoutError as RedisTimeoutError

#: One command: its name and arguments, as `execute_command` takes them.
Command = tuple[Any, ...]


async def round_trip(redis: Redis, commands: Sequence[Command]) -> list[Any]:
    """Send `commands` in one write and return their replies, in order."""
    if not commands:
        return []
    try:
        packed = [hiredis.pack_command(command) for command in commands]
    except TypeError as exc:  # redis-py raises DataError for an argument it cannot send, too
        raise DataError(f"a command's arguments must be str, int, float or bytes ({exc})") from None
    pool = redis.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    try:
        if await conn.can_read():  # at EOF (Redis restarted since its last use) or holding stray bytes: renew it
            await conn.disconnect()
            await conn.connect()
        await conn.send_packed_command(packed)
        replies = [await conn.read_response() for _ in commands]
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)
    return replies


def hash_reply(raw: Any) -> dict[Any, Any]:
    """An HGETALL reply as a dict, whichever protocol the connection speaks."""
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))


class RoundTrips:
    """`round_trip` on a client of its own whose connections have no socket timeout; `timeout` bounds each whole
    round trip instead (connecting, sending, every reply). With a socket timeout, redis-py sends under
    asyncio.wait_for, which on Python 3.11 wraps every send in a new task (~17 us of a round trip's CPU, measured);
    asyncio.timeout arms one timer. A round trip past `timeout` is cancelled, its connection closed, and raises
    redis-py's TimeoutError, like a socket timeout on any other call."""

    def __init__(self, url: str, timeout: float) -> None:
        self.redis = Redis.from_url(url, socket_timeout=None, socket_connect_timeout=timeout, health_check_interval=10)
        self.timeout = timeout

    async def __call__(self, commands: Sequence[Command]) -> list[Any]:
        try:
            async with asyncio.timeout(self.timeout):
                return await round_trip(self.redis, commands)
        except TimeoutError:
            raise RedisTimeoutError(f"Redis did not answer within {self.timeout:g} s") from None

    async def aclose(self) -> None:
        await self.redis.aclose()
