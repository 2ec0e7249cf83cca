"""A sampler thread: `tick()` once per interval until stopped; `finish()` collects what happened in between."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod

from load.model import Recording


class Sampler(ABC):
    interval: float = 1.0
    source: str = ""  # where the figures come from, for the report ("docker stats", "metrics.k8s.io", ...)

    def __init__(self) -> None:
        self.recording = Recording()
        self.started_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def check(self) -> None:
        """Raise a clear error (RuntimeError subclass) when the environment cannot be sampled at all."""

    @abstractmethod
    def tick(self) -> None:
        """Take one sample of every workload and append it to self.recording."""

    def finish(self) -> None:  # noqa: B027 - optional hook
        """After the last tick: collect events (OOM kills, restarts) over the whole run."""

    def start(self) -> None:
        self.started_at = time.time()
        self._thread = threading.Thread(target=self._loop, name=type(self).__name__, daemon=True)
        self._thread.start()

    def stop(self) -> Recording:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            self.finish()
        except Exception as exc:  # a failed event query must not hide the samples: record it
            self.recording.errors.append(f"{type(self).__name__}.finish: {exc}")
        return self.recording

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # keep sampling; the verdict lists sampling errors
                self.recording.errors.append(f"{type(self).__name__}.tick: {exc}")
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))
