"""A micro-batcher: concurrent scoring requests share one jitted call.

Requests queue up; a single task takes everything queued (up to `max_batch`), optionally waiting `window_s` for
more, pads the batch to a power of two (so JAX compiles a handful of shapes once) and resolves each caller's future.
Under load, requests that arrive while one batch computes form the next, so batches grow with concurrency and the
per-vector cost falls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import numpy as np

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
        self._queue: asyncio.Queue[tuple[F32, F32, F32, asyncio.Future[tuple[float, float]]]] = asyncio.Queue()
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
            self._task = asyncio.create_task(self._run(), name="predictor-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            *_, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(RuntimeError("predictor stopped"))

    async def score(self, x: F32, mu: F32, var: F32) -> tuple[float, float]:
        """Return (d2, surprise) for one vector; resolved when its batch has been computed."""
        if self._task is None:
            raise RuntimeError("micro-batcher is not running")
        fut: asyncio.Future[tuple[float, float]] = asyncio.get_running_loop().create_future()
        await self._queue.put((x, mu, var, fut))
        return await fut

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            if self._window_s > 0 and self._queue.qsize() < self._max_batch - 1:
                await asyncio.sleep(self._window_s)
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                self._compute(batch)
            except Exception as exc:  # resolve every waiter; never leave a caller hanging
                log.exception("predictor batch failed")
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)

    def _compute(self, batch: list[tuple[F32, F32, F32, asyncio.Future[tuple[float, float]]]]) -> None:
        n = len(batch)
        size = next(s for s in self._sizes if s >= n)
        x = np.zeros((size, self._dim), dtype=np.float32)
        mu = np.zeros((size, self._dim), dtype=np.float32)
        var = np.ones((size, self._dim), dtype=np.float32)
        for i, (xi, mui, vari, _) in enumerate(batch):
            x[i], mu[i], var[i] = xi, mui, vari
        d2, surprise = self._score(x, mu, var)
        self.batches += 1
        self.items += n
        for i, (*_, fut) in enumerate(batch):
            if not fut.done():
                fut.set_result((float(d2[i]), float(surprise[i])))
