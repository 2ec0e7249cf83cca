"""A micro-batcher: concurrent scoring requests share one jitted call.

Requests queue up; a single task takes everything queued (up to `max_batch`), optionally waiting `window_s` for
more, pads the batch to a power of two (so JAX compiles a handful of shapes once) and resolves each caller's future.
Under load, requests that arrive while one batch computes form the next, so batches grow with concurrency and the
per-vector cost falls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np

from brain import metrics, tasks
from brain.predictor.numerics import F32

log = logging.getLogger(__name__)

ScoreFn = Callable[[F32, F32, F32], tuple[F32, F32]]


def bucket_sizes(max_batch: int) -> list[int]:
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    sizes.append(max_batch)
    return sizes


class MicroBatcher:
    def __init__(self, score: ScoreFn, dim: int, max_batch: int = 64, window_s: float = 0.0) -> None:
        self._score = score
        self._dim = dim
        self._max_batch = max_batch
        self._window_s = window_s
        self._sizes = bucket_sizes(max_batch)
        # A plain list and an event: cheaper per request than an asyncio.Queue's put/get awaits.
        self._pending: list[tuple[F32, F32, F32, asyncio.Future[tuple[float, float]]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    def warm_up(self) -> None:
        """Compile every padded shape once, so the first real requests do not pay for compilation."""
        for size in self._sizes:
            zeros = np.zeros((size, self._dim), dtype=np.float32)
            self._score(zeros, zeros, np.ones_like(zeros))

    def start(self) -> None:
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="predictor-batcher")

    async def stop(self) -> None:
        await tasks.cancel(self._task)
        self._task = None
        pending, self._pending = self._pending, []
        for *_, fut in pending:
            if not fut.done():
                fut.set_exception(RuntimeError("predictor stopped"))

    def score(self, x: F32, mu: F32, var: F32) -> asyncio.Future[tuple[float, float]]:
        """A future of (d2, surprise) for one vector, resolved when its batch has been computed."""
        if self._task is None:
            raise RuntimeError("micro-batcher is not running")
        fut: asyncio.Future[tuple[float, float]] = asyncio.get_running_loop().create_future()
        self._pending.append((x, mu, var, fut))
        self._wakeup.set()
        return fut

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if self._window_s > 0 and len(self._pending) < self._max_batch:
                await asyncio.sleep(self._window_s)
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            if not self._pending:
                self._wakeup.clear()
            try:
                self._compute(batch)
            except Exception as exc:  # resolve every waiter; never leave a caller hanging
                log.exception("predictor batch failed")
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
            # Let the callers just resolved (and new arrivals) run before the next batch is cut.
            await asyncio.sleep(0)

    def _compute(self, batch: list[tuple[F32, F32, F32, asyncio.Future[tuple[float, float]]]]) -> None:
        n = len(batch)
        size = next(s for s in self._sizes if s >= n)
        xs, mus, vars_, futures = zip(*batch, strict=True)
        x, mu, var = np.stack(xs), np.stack(mus), np.stack(vars_)
        if size > n:  # pad to a compiled shape; padded rows score 0 against unit variance and are dropped
            pad = ((0, size - n), (0, 0))
            x, mu = np.pad(x, pad), np.pad(mu, pad)
            var = np.pad(var, pad, constant_values=1.0)
        d2, surprise = self._score(x, mu, var)
        self.batches += 1
        self.items += n
        metrics.PREDICTOR_BATCH.observe(n)
        for fut, d2_i, surprise_i in zip(futures, d2.tolist(), surprise.tolist(), strict=False):
            if not fut.done():
                fut.set_result((d2_i, surprise_i))
