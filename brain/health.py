"""Background health checks: each component is probed on an interval, and requests read the last snapshot.

`/health` therefore answers in microseconds under load. A check that raises or times out counts as down, with the
reason recorded; nothing is ever reported up because a probe failed to run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from brain import metrics, tasks

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[dict[str, Any]]]


class HealthMonitor:
    def __init__(
        self,
        app_name: str,
        checks: dict[str, Check],
        interval_s: float,
        timeout_s: float,
        required: list[str] | None = None,
    ) -> None:
        self._app = app_name
        self._checks = checks
        #: Components that must be up for the app to be ready (default: every checked component).
        self.required = list(checks) if required is None else required
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._task: asyncio.Task[None] | None = None
        self.snapshot: dict[str, dict[str, Any]] = {
            name: {"ok": False, "error": "not checked yet"} for name in checks
        }
        self.checked_at = 0.0

    async def refresh(self) -> dict[str, dict[str, Any]]:
        results = await asyncio.gather(*(self._run(name, check) for name, check in self._checks.items()))
        self.snapshot = dict(zip(self._checks, results, strict=True))
        self.checked_at = time.time()
        for name, result in self.snapshot.items():
            metrics.DEPENDENCY_UP.labels(self._app, name).set(1 if result["ok"] else 0)
        metrics.READY.labels(self._app).set(0 if self.failing() else 1)
        return self.snapshot

    def failing(self) -> list[str]:
        """Required components whose last check did not pass (a required component with no check fails)."""
        return [name for name in self.required if not self.snapshot.get(name, {}).get("ok", False)]

    async def _run(self, name: str, check: Check) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(check(), timeout=self._timeout_s)
        except TimeoutError:
            result = {"ok": False, "error": f"no answer within {self._timeout_s:g}s"}
        except Exception as exc:
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
        return result

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"{self._app}-health")

    async def stop(self) -> None:
        await tasks.cancel(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # refresh() already contains check failures; this is a bug guard
                log.exception("health refresh failed")
            await asyncio.sleep(self._interval_s)
