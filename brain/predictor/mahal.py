"""The real predictor: per-tenant EWMA statistics in Redis, JAX Mahalanobis scoring through a micro-batcher.

Statistics live in the Redis hash `sb:pred:<tenant>` (fields `mu`, `var`: little-endian float32; `n`: count) so
that every worker and replica agrees. The EWMA update runs inside Redis as one Lua script, so concurrent observers
on any replica never lose each other's updates and never contend. The update is a command the caller sends
(`observe_commands`, then `scored` on its reply), so /act reads working memory in the same round trip.
"""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from brain import metrics
from brain.embeddings import Vector, from_bytes, to_bytes
from brain.predictor.base import Prediction
from brain.predictor.batcher import MicroBatcher
from brain.predictor.numerics import F32, prior, surprise_batch
from brain.roundtrip import Command, round_trip

# EWMA step (see numerics.ewma_update) over little-endian float32 vectors, atomically, inside Redis. Returns the
# statistics as they were before this vector, which is what the vector is scored against. Sent as EVAL with its
# body, so that no reply is ever NOSCRIPT (a registered script would first cost a SCRIPT EXISTS round trip); Redis
# caches the compiled body.
_OBSERVE = """
local x, alpha, dim = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local mu = redis.call('HGET', KEYS[1], 'mu') or ARGV[4]
local var = redis.call('HGET', KEYS[1], 'var') or ARGV[5]
local fmt = '<' .. string.rep('f', dim)
local xs, ms, vs = {struct.unpack(fmt, x)}, {struct.unpack(fmt, mu)}, {struct.unpack(fmt, var)}
local new_mu, new_var = {}, {}
for i = 1, dim do
  local d = xs[i] - ms[i]
  new_mu[i] = ms[i] + alpha * d
  new_var[i] = (1 - alpha) * (vs[i] + alpha * d * d)
end
redis.call('HSET', KEYS[1], 'mu', struct.pack(fmt, unpack(new_mu)), 'var', struct.pack(fmt, unpack(new_var)))
redis.call('HINCRBY', KEYS[1], 'n', 1)
return {mu, var}
"""


def stats_key(tenant: str) -> str:
    return f"sb:pred:{tenant}"


class MahalPredictor:
    provider = "mahal"
    real = True

    def __init__(self, redis: Redis, dim: int, alpha: float, max_batch: int = 64, window_s: float = 0.0) -> None:
        self._redis = redis
        self._dim = dim
        self._alpha = alpha
        self._batcher = MicroBatcher(surprise_batch, dim, max_batch=max_batch, window_s=window_s)
        self._warmed = False
        self._prior = tuple(to_bytes(v) for v in prior(dim))

    async def start(self) -> None:
        self._batcher.warm_up()
        self._batcher.start()
        self._warmed = True

    async def stop(self) -> None:
        await self._batcher.stop()

    def warmed(self) -> bool:
        return self._warmed

    def _decode(self, raw: list[bytes | str | None]) -> tuple[F32, F32]:
        mu, var = raw
        if not isinstance(mu, bytes) or not isinstance(var, bytes):  # absent: nothing learnt yet
            return prior(self._dim)
        return from_bytes(mu, self._dim), from_bytes(var, self._dim)

    async def statistics(self, tenant: str) -> tuple[F32, F32]:
        """The tenant's current (mean, variance), or the prior when nothing has been observed."""
        return self._decode(await self._redis.hmget(stats_key(tenant), ["mu", "var"]))

    def observe_commands(self, tenant: str, vec: Vector) -> list[Command]:
        """The EWMA update of `vec`, one command; its one reply goes to `scored`."""
        return [("EVAL", _OBSERVE, 1, stats_key(tenant), to_bytes(vec), self._alpha, self._dim, *self._prior)]

    async def scored(self, replies: list[Any], vec: Vector) -> Prediction:
        """Score `vec` against the statistics the queued update returned (as they were before it)."""
        (before,) = replies
        mu, var = self._decode(before)
        started = time.perf_counter()
        d2, surprise = await self._batcher.score(vec, mu, var)
        metrics.PREDICTOR_LATENCY.observe(time.perf_counter() - started)
        return Prediction(d2=d2, surprise=surprise)

    async def observe(self, tenant: str, vec: Vector) -> Prediction:
        """Score `vec` and fold it into the tenant's statistics, in a round trip of its own."""
        return await self.scored(await round_trip(self._redis, self.observe_commands(tenant, vec)), vec)
