"""Working memory: a bounded, expiring, per-tenant set of recent items in Redis.

Layout, per tenant `t` (the braces keep a tenant's keys in one Redis Cluster slot):
- `sb:wm:{t}:items`: hash id -> JSON item (content, metadata, importance, ts, vec as base64 float32);
- `sb:wm:{t}:order`: sorted set id -> insertion time.
A Lua script inserts, drops items older than the TTL and evicts the oldest beyond capacity (items) or beyond the
byte budget (`max_bytes`, the stored JSON of the tenant's items) in one atomic step, so every worker and replica
sees the same bounded set: a tenant's working memory is its own quota, and writing more only pushes out its own
oldest items. The budget is at least MIN_WM_BYTES, which any valid item fits in, so a write is never refused.
Keys carry no other tenant's data, so a tenant cannot reach another's items.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis.asyncio import Redis

from brain.embeddings import Vector, cosine_scores, from_bytes, to_bytes
from brain.roundtrip import Command, hash_reply

_ADD = """
local now = tonumber(ARGV[3])
local capacity = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - ttl))
for _, id in ipairs(expired) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
local n = redis.call('ZCARD', KEYS[2])
if n > capacity then
  local evict = redis.call('ZRANGE', KEYS[2], 0, n - capacity - 1)
  for _, id in ipairs(evict) do redis.call('HDEL', KEYS[1], id) end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - capacity - 1)
  n = capacity
end
-- The byte budget: the oldest items go (never the one just written) until the tenant's items fit in it.
local max_bytes = tonumber(ARGV[6])
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
local sizes, total = {}, 0
for i, id in ipairs(ids) do
  sizes[i] = redis.call('HSTRLEN', KEYS[1], id)
  total = total + sizes[i]
end
for i, id in ipairs(ids) do
  if total <= max_bytes then break end
  if id ~= ARGV[1] then
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    total = total - sizes[i]
    n = n - 1
  end
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return n
"""


#: A tenant's working-memory byte budget by default, and its floor: the floor is above the largest valid item as
#: stored (its JSON, every character escaped, plus the base64 vector), so that every item fits on its own.
DEFAULT_WM_BYTES = 8 * 1024 * 1024
MIN_WM_BYTES = 2 * 1024 * 1024


def _keys(tenant: str) -> tuple[str, str]:
    return f"sb:wm:{{{tenant}}}:items", f"sb:wm:{{{tenant}}}:order"


@dataclass(frozen=True)
class WMItem:
    id: str
    content: str
    metadata: dict[str, Any]
    importance: float
    ts: float
    vec: Vector


class WorkingMemory:
    def __init__(self, redis: Redis, dim: int, capacity: int, ttl_seconds: int,
                 max_bytes: int = DEFAULT_WM_BYTES) -> None:
        self._redis = redis
        self._dim = dim
        self.capacity = capacity
        self.ttl_seconds = ttl_seconds
        self.max_bytes = max(max_bytes, MIN_WM_BYTES)
        self._add = redis.register_script(_ADD)

    async def add(
        self, tenant: str, item_id: str, content: str, metadata: dict[str, Any], importance: float, vec: Vector
    ) -> int:
        """Store an item; returns how many items the tenant's working memory now holds."""
        now = time.time()
        payload = json.dumps(
            {
                "content": content,
                "metadata": metadata,
                "importance": importance,
                "ts": now,
                "vec": base64.b64encode(to_bytes(vec)).decode("ascii"),
            }
        )
        count = await self._add(
            keys=list(_keys(tenant)), args=[item_id, payload, now, self.capacity, self.ttl_seconds, self.max_bytes]
        )
        return int(count)

    async def items(self, tenant: str) -> list[WMItem]:
        """The tenant's live items (expired ones are skipped)."""
        return self.decode_items(await self._redis.hgetall(_keys(tenant)[0]))

    def items_command(self, tenant: str) -> Command:
        """The read of the tenant's items as a command (its raw reply goes to `decode_items`), so that a caller with
        other Redis work (/act's predictor update) sends both in one round trip (brain.roundtrip)."""
        return ("HGETALL", _keys(tenant)[0])

    def decode_items(self, raw: Any) -> list[WMItem]:
        """The live items of an items-hash reply: a dict, or HGETALL's raw flat list."""
        horizon = time.time() - self.ttl_seconds
        out = []
        for key, value in hash_reply(raw).items():
            data = json.loads(value)
            if data["ts"] < horizon:
                continue
            out.append(
                WMItem(
                    id=key.decode() if isinstance(key, bytes) else str(key),
                    content=data["content"],
                    metadata=data["metadata"],
                    importance=float(data["importance"]),
                    ts=float(data["ts"]),
                    vec=from_bytes(base64.b64decode(data["vec"]), self._dim),
                )
            )
        return out

    async def recall(self, tenant: str, query: Vector, top_k: int) -> list[tuple[WMItem, float]]:
        items = await self.items(tenant)
        if not items:
            return []
        scores = cosine_scores(query, np.stack([item.vec for item in items]))
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [(items[i], float(np.clip(scores[i], -1.0, 1.0))) for i in order]

    async def delete(self, tenant: str, item_id: str) -> bool:
        items_key, order_key = _keys(tenant)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(items_key, item_id)
            pipe.zrem(order_key, item_id)
            removed, _ = await pipe.execute()
        return bool(removed)
