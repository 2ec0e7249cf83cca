"""The real predictor: per-tenant EWMA statistics in Redis, JAX Mahalanobis scoring through a micro-batcher.

Statistics live in the Redis hash `sb:pred:<tenant>` (fields `mu`, `var`: little-endian float32; `n`: count) so
that every worker and replica agrees. Updates use an optimistic WATCH/MULTI transaction, retried on conflict, so
concurrent observers never lose each other's updates.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis
from redis.exceptions import WatchError

from brain import metrics
from brain.embeddings import Vector, from_bytes, to_bytes
from brain.predictor.base import Prediction
from brain.predictor.batcher import MicroBatcher
from brain.predictor.numerics import F32, ewma_update, prior, surprise_batch

_RETRIES = 8


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
        key = stats_key(tenant)
        async with self._redis.pipeline(transaction=True) as pipe:
            for _ in range(_RETRIES):
                try:
                    await pipe.watch(key)
                    mu, var = self._decode(await pipe.hmget(key, ["mu", "var"]))
                    mu, var = ewma_update(vec, mu, var, self._alpha)
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hset(key, mapping={"mu": to_bytes(mu), "var": to_bytes(var)})
                    pipe.hincrby(key, "n", 1)
                    await pipe.execute()
                    return
                except WatchError:
                    continue
        raise RuntimeError(f"predictor statistics for tenant {tenant!r} stayed contended for {_RETRIES} tries")
