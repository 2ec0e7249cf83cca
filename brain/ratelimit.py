"""Token buckets in Redis, shared by every worker and replica: one limiter per tenant, one per client address.

Each key's bucket holds up to `burst` tokens and refills at `rate` tokens per second; a request takes one. The
refill-and-take runs as one Lua script using Redis' clock, so concurrent requests on any replica never overspend.
When Redis cannot answer, `fail_open` decides: let requests through, or refuse them with 503.

Leases: a process takes its tokens from Redis up to `lease` at a time and spends them locally for at most
LEASE_S, so a busy key costs one Redis round trip per lease rather than per request (the EVALSHA was a tenth of
/act's CPU). Every token spent was taken from the shared bucket: a lease never lets more through than the bucket
gave. What it costs is fairness at the edge: a replica may refuse while another still holds up to `lease - 1`
unspent tokens, which lapse after LEASE_S. The lease is `rate * LEASE_S` tokens, at most a quarter of the burst,
and at least one: a bucket slower than 2 / LEASE_S = 40 tokens per second leases one token at a time, that is, is
exact.

Eviction: Redis runs `volatile-lru` (compose/, k8s/), which evicts only keys with a TTL, that is working memory.
Tenant buckets carry none, so one tenant filling working memory cannot evict another tenant's bucket (nor its
predictor state); they are as many as the tenants. Address buckets (any client address, an unbounded set) expire
once full again, and an evicted one is a full one: what an idle bucket is anyway.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
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
local granted = math.max(0, math.min(tonumber(ARGV[4]) or 1, math.floor(tokens)))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(t))
if ARGV[3] == '1' then
  redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
else
  redis.call('PERSIST', KEYS[1])  -- a durable bucket (also one an older release gave a TTL)
end
return {granted, tostring(tokens)}
"""

#: How long a process may spend the tokens of one lease (seconds).
LEASE_S = 0.05
#: Keys whose leases a process remembers; beyond it the oldest lease is dropped (its tokens lapse early).
MAX_LEASES = 4096


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int


_ALLOWED = Verdict(True, 0)


@dataclass
class _Lease:
    tokens: int
    until: float


class RateLimiter:
    def __init__(self, redis: Redis, rate: float, burst: int, fail_open: bool, scope: str = "tenant",
                 *, expire: bool | None = None, lease: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.scope = scope
        #: Whether buckets expire (and so may be evicted); default: every scope but the tenants'.
        self.expire = scope != "tenant" if expire is None else expire
        self.rate = rate
        self.burst = burst
        self.fail_open = fail_open
        #: Tokens taken from Redis per round trip (see the module docstring).
        self.lease = lease if lease is not None else max(1, min(int(rate * LEASE_S), burst // 4))
        self._clock = clock
        self._leases: dict[str, _Lease] = {}
        self._inflight: dict[str, asyncio.Future[Verdict | None]] = {}
        self._take = redis.register_script(_TAKE)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _key(self, name: str) -> str:
        """Tenant buckets keep their original keys; other scopes get their own namespace."""
        prefix = "sb:rl:" if self.scope == "tenant" else f"sb:rl:{self.scope}:"
        return f"{prefix}{{{name}}}"

    async def check(self, name: str) -> Verdict:
        """Take one token for `name`: from this process's lease while it lasts, else from Redis.

        One lease per key is in flight at a time: requests that find none wait for the one being taken and share
        it, instead of each taking a lease of their own (a burst of concurrent requests would otherwise lease the
        bucket empty many times over what they spend)."""
        if self.lease == 1:
            return (await self._ask(name))[1]
        while True:
            held = self._leases.get(name)
            if held is not None and held.tokens > 0 and self._clock() < held.until:
                held.tokens -= 1
                return _ALLOWED
            inflight = self._inflight.get(name)
            if inflight is None:
                break
            refused = await asyncio.shield(inflight)  # a waiter's cancellation must not cancel the lease
            if refused is not None:
                return refused  # the bucket was empty a moment ago
        taking: asyncio.Future[Verdict | None] = asyncio.get_running_loop().create_future()
        self._inflight[name] = taking
        try:
            granted, verdict = await self._ask(name)
            if granted > 1:  # this request spends one; the rest is the lease
                self._keep(name, _Lease(granted - 1, self._clock() + LEASE_S))
            taking.set_result(None if verdict.allowed else verdict)
            return verdict
        finally:
            del self._inflight[name]
            if not taking.done():  # Redis failed or the taker was cancelled: each waiter asks for itself
                taking.set_result(None)

    async def _ask(self, name: str) -> tuple[int, Verdict]:
        """Up to `lease` tokens from the bucket in Redis: how many it gave, and the verdict for this request."""
        result = await self._take(keys=[self._key(name)],
                                  args=[self.rate, self.burst, "1" if self.expire else "0", self.lease])
        granted, tokens = int(result[0]), float(result[1])
        if not granted:
            return 0, Verdict(False, max(1, math.ceil((1 - tokens) / self.rate)))
        return granted, _ALLOWED

    def _keep(self, name: str, lease: _Lease) -> None:
        self._leases.pop(name, None)  # re-inserted last: the dict's order is the leases' age
        self._leases[name] = lease
        while len(self._leases) > MAX_LEASES:
            del self._leases[next(iter(self._leases))]

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
