"""Replaying the /remember journal into SomaMemory once it answers again: a background task of the API.

Every `interval_s`, when the journal holds batches and the health monitor last saw SomaMemory up, one round sends
them (`MemoryJournal.replay`: oldest first, under the directory's lock, tombstoned entries skipped). SomaMemory
failing mid-round pauses the replay until the next round; the unsent batches wait. A journalled write SomaMemory
refuses because another memory holds its id (a later request reused the idempotency key for another body) is logged
and dropped: that later write stands, and the rest of the journal is not held back by it. So is one SomaMemory will
never store (the tenant is at its quota, or SomaMemory refuses the body: 400, 413, 422).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from brain import metrics, tasks
from brain.memory.client import MemoryClient, MemoryConflict, MemoryQuotaExceeded, MemoryRefused, MemoryUnavailable
from brain.memory.journal import Entry, MemoryJournal

log = logging.getLogger(__name__)


class JournalReplay:
    def __init__(self, journal: MemoryJournal, memory: MemoryClient, interval_s: float,
                 memory_up: Callable[[], bool]) -> None:
        self.journal = journal
        self.memory = memory
        self.interval_s = interval_s
        #: Whether SomaMemory answered the last health check: no round is tried while it is down.
        self.memory_up = memory_up
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="journal-replay")

    async def stop(self) -> None:
        await tasks.cancel(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if self.journal.pending() and self.memory_up():
                await self.replay_once()

    async def replay_once(self) -> int:
        """One round; returns how many entries it sent (0 when it paused, or another replayer holds the lock)."""
        try:
            replayed = await self.journal.replay(self._send, self._forget)
        except MemoryUnavailable as exc:
            log.warning("journal replay paused: %s", exc)
            return 0
        except OSError as exc:  # the journal's disk: the batches stay, and the next round tries again
            log.error("journal replay failed: %s", exc)
            return 0
        metrics.JOURNAL_REPLAYED.inc(replayed)
        return replayed

    async def _send(self, entry: Entry) -> None:
        try:
            await self.memory.remember(entry["tenant"], entry["id"], entry["content"], entry["metadata"],
                                       entry["importance"])
        except MemoryConflict:  # a later request with the same idempotency key stored another body: it stands
            log.error("journalled write %s for tenant %s not replayed: SomaMemory holds another memory under "
                      "that id", entry["id"], entry["tenant"])
        except (MemoryQuotaExceeded, MemoryRefused) as exc:  # the tenant filled up since, or SomaMemory refuses
            # this body every time (journalled by an older API, or imported): waiting would hold back the rest
            log.error("journalled write %s for tenant %s dropped: %s", entry["id"], entry["tenant"], exc)

    async def _forget(self, entry: Entry) -> None:
        await self.memory.delete(entry["tenant"], entry["id"])
