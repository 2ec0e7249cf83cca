"""Token buckets in Redis, shared by every worker and replica: one limiter per tenant, one per client address.

Each key's bucket holds up to `burst` tokens and refills at `rate` tokens per second; a request takes one. The
refill-and-take runs as one Lua script using Redis' clock, so concurrent requests on any replica never overspend.
When Redis cannot answer, `fail_open` decides: let requests through, or refuse them with 503.

Eviction: Redis runs `volatile-lru` (compose/, k8s/), which evicts only keys with a TTL, that is working memory.
Tenant buckets carry none, so one tenant filling working memory cannot evict another tenant's bucket (nor its
predictor state); they are as many as the tenants. Address buckets (any client address, an unbounded set) expire
once full again, and an evicted one is a full one: what an idle bucket is anyway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from brain.errors import APIError

_TAKE = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or t
tokens = math.min(burst, tokens + math.max(0, t - ts) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(t))
if ARGV[3] == '1' then
  redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
else
  redis.call('PERSIST', KEYS[1])  -- a durable bucket (also one an older release gave a TTL)
end
return {allowed, tostring(tokens)}
"""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int


class RateLimiter:
    def __init__(self, redis: Redis, rate: float, burst: int, fail_open: bool, scope: str = "tenant",
                 *, expire: bool | None = None) -> None:
        self.scope = scope
        #: Whether buckets expire (and so may be evicted); default: every scope but the tenants'.
        self.expire = scope != "tenant" if expire is None else expire
        self.rate = rate
        self.burst = burst
        self.fail_open = fail_open
        self._take = redis.register_script(_TAKE)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _key(self, name: str) -> str:
        """Tenant buckets keep their original keys; other scopes get their own namespace."""
        prefix = "sb:rl:" if self.scope == "tenant" else f"sb:rl:{self.scope}:"
        return f"{prefix}{{{name}}}"

    async def check(self, name: str) -> Verdict:
        result = await self._take(keys=[self._key(name)], args=[self.rate, self.burst, "1" if self.expire else "0"])
        allowed, tokens = int(result[0]), float(result[1])
        retry = 0 if allowed else max(1, math.ceil((1 - tokens) / self.rate))
        return Verdict(bool(allowed), retry)

    async def enforce(self, name: str) -> None:
        """Raise 429 (with Retry-After) when `name` is over its rate; 503 if Redis is down and failing closed."""
        if not self.enabled:
            return
        try:
            verdict = await self.check(name)
        except RedisError as exc:
            if self.fail_open:
                return
            raise APIError(503, "rate_limiter_unavailable",
                           "the rate limiter (Redis) is unavailable; refusing rather than running unlimited") from exc
        if not verdict.allowed:
            raise APIError(
                429, "rate_limited", f"{self.scope} is over {self.rate:g} requests/s (burst {self.burst})",
                {"Retry-After": str(verdict.retry_after_s)},
            )
