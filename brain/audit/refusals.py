"""Refused requests, audited in aggregate: one event per (outcome, action) per window, with a count.

A refusal changes nothing, and the caller it refuses chooses how many there are; one audit row and one Kafka event
each would let an unauthenticated client grow Postgres and Kafka without bound. So refusals are counted here, in
memory, and every `window_s` each (outcome, action) seen in the window becomes one event whose `count` says how
many requests it stands for. Both are fixed sets (the gate's outcomes, its audited actions), so a window writes at
most len(outcomes) x len(actions) events per worker, however many requests are refused. This is an aggregate
rather than a sampler because a sample would lose the number itself, the fact an auditor wants ("3 000 refused
deletes in this minute"); the event names no tenant or subject, since a refused identity is unverified (401) or,
kept per tenant, would make the set of keys the callers' to grow. The metric `somabrain_refusals_total` counts the
same refusals live. What is counted when the process dies before a flush is lost from the audit (not from the
metric); shutdown flushes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from brain import tasks
from brain.audit.events import AuditEvent

log = logging.getLogger(__name__)

#: Tenant and subject of an aggregate event: not a valid tenant (it cannot start with "*"), so never a real one.
AGGREGATE = "*"

Sink = Callable[[AuditEvent], Awaitable[None]]


class RefusalAudit:
    def __init__(self, sink: Sink, window_s: float) -> None:
        self._sink = sink
        self._window_s = window_s
        self._counts: Counter[tuple[str, str]] = Counter()
        self._task: asyncio.Task[None] | None = None

    def record(self, outcome: str, action: str) -> None:
        """Count one refusal; it is written with the window's others at the next flush."""
        self._counts[(outcome, action)] += 1

    async def flush(self) -> int:
        """Write one event per (outcome, action) counted since the last flush; returns how many were written.

        A failed write puts its count back, so that the next window reports it (Postgres down is no reason to
        forget refusals).
        """
        counts, self._counts = self._counts, Counter()
        written = 0
        for (outcome, action), count in sorted(counts.items()):
            event = AuditEvent(tenant=AGGREGATE, subject=AGGREGATE, action=action, outcome=outcome, count=count)
            try:
                await self._sink(event)
            except Exception as exc:  # kept for the next window, never raised into the flush loop or shutdown
                log.warning("could not audit %d refused %s (%s): %s; retrying next window", count, action, outcome,
                            exc)
                self._counts[(outcome, action)] += count
                continue
            written += 1
        return written

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="refusal-audit")

    async def stop(self) -> None:
        """Stop the window loop and write what it has counted so far."""
        await tasks.cancel(self._task)
        self._task = None
        await self.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._window_s)
            await self.flush()
