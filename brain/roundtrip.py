"""Several Redis commands in one round trip, on a connection of the client's own pool, without redis-py's Pipeline.

/act sends two commands per request (working memory's read, the predictor's update). Through
`redis.pipeline(transaction=False)` they cost ~120 us of client CPU here (redis-py 8.1, Python 3.11, hiredis),
against ~80 us this way: the pipeline adds its deprecated-argument check, observability hooks, the retry wrapper and
response callbacks on every call. The commands still go out in one write and their replies come back in order, as
in a pipeline.

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

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

#: One command: its name and arguments, as `execute_command` takes them.
Command = tuple[Any, ...]


async def round_trip(redis: Redis, commands: Sequence[Command]) -> list[Any]:
    """Send `commands` in one write and return their replies, in order."""
    if not commands:
        return []
    pool = redis.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    try:
        if await conn.can_read():  # at EOF (Redis restarted since this connection was last used): a fresh one
            await conn.disconnect()
            await conn.connect()
        await conn.send_packed_command(conn.pack_commands(commands))
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
