"""The real predictor: per-tenant EWMA statistics in Redis, JAX Mahalanobis scoring through a micro-batcher.

Statistics live in the Redis hash `sb:pred:<tenant>` (fields `mu`, `var`: little-endian float32; `n`: count) so
that every worker and replica agrees. The EWMA update runs inside Redis as one Lua script, so concurrent observers
on any replica never lose each other's updates and never contend.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from brain import metrics
from brain.embeddings import Vector, from_bytes, to_bytes
from brain.predictor.base import Prediction
from brain.predictor.batcher import MicroBatcher
from brain.predictor.numerics import F32, prior, surprise_batch

# EWMA step (see numerics.ewma_update) over little-endian float32 vectors, atomically, inside Redis.
_UPDATE = """
local x, alpha, dim = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local mu = redis.call('HGET', KEYS[1], 'mu') or ARGV[4]
local var = redis.call('HGET', KEYS[1], 'var') or ARGV[5]
local new_mu, new_var = {}, {}
for i = 0, dim - 1 do
  local p = i * 4 + 1
  local xi = struct.unpack('<f', x, p)
  local mi = struct.unpack('<f', mu, p)
  local vi = struct.unpack('<f', var, p)
  local d = xi - mi
  new_mu[i + 1] = struct.pack('<f', mi + alpha * d)
  new_var[i + 1] = struct.pack('<f', (1 - alpha) * (vi + alpha * d * d))
end
redis.call('HSET', KEYS[1], 'mu', table.concat(new_mu), 'var', table.concat(new_var))
return redis.call('HINCRBY', KEYS[1], 'n', 1)
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
        self._update = redis.register_script(_UPDATE)

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

    async def _load(self, tenant: str) -> tuple[F32, F32]:
        return self._decode(await self._redis.hmget(stats_key(tenant), ["mu", "var"]))

    async def observe(self, tenant: str, vec: Vector) -> Prediction:
        mu, var = await self._load(tenant)
        started = time.perf_counter()
        d2, surprise = await self._batcher.score(vec, mu, var)
        metrics.PREDICTOR_LATENCY.observe(time.perf_counter() - started)
        await self._learn(tenant, vec)
        return Prediction(d2=d2, surprise=surprise)

    async def _learn(self, tenant: str, vec: Vector) -> None:
        prior_mu, prior_var = prior(self._dim)
        await self._update(
            keys=[stats_key(tenant)],
            args=[to_bytes(vec), self._alpha, self._dim, to_bytes(prior_mu), to_bytes(prior_var)],
        )
