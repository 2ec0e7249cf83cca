"""A durable local journal for /remember while SomaMemory is down (SOMABRAIN_OUTBOX_DIR, a PVC in Kubernetes).

Each accepted write is one batch file, written to a temporary name, fsync'd, renamed into place and the directory
fsync'd, before the client is answered: an acknowledged write survives a crash. `replay()` sends the files, oldest
first, to SomaMemory (writes are idempotent by id) and removes each only after SomaMemory confirmed it.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Sender = Callable[[dict[str, Any]], Awaitable[None]]


class JournalError(Exception):
    """The journal directory is missing or not writable."""


class MemoryJournal:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory) / "memory-journal"

    def ensure(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create the journal directory {self.dir}: {exc.strerror}") from exc
        if not os.access(self.dir, os.W_OK):
            raise JournalError(f"the journal directory {self.dir} is not writable")

    def append(self, entries: list[dict[str, Any]]) -> Path:
        """Durably write one batch; returns its file once it is on disk."""
        self.ensure()
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        tmp = self.dir / f".{name}.tmp"
        data = json.dumps({"version": 1, "entries": entries}).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        final = self.dir / name
        os.replace(tmp, final)
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return final

    def discard(self, path: Path) -> None:
        """Drop a batch that was written but never acknowledged (the request failed after journalling it)."""
        path.unlink(missing_ok=True)

    def pending(self) -> list[Path]:
        if not self.dir.exists():
            return []
        return sorted(p for p in self.dir.iterdir() if p.suffix == ".json" and not p.name.startswith("."))

    async def replay(self, send: Sender) -> int:
        """Send every journalled entry, oldest file first; stops at the first failure (the rest wait)."""
        replayed = 0
        for path in self.pending():
            batch = json.loads(path.read_bytes())
            for entry in batch["entries"]:
                await send(entry)
            path.unlink()
            replayed += len(batch["entries"])
            log.info("replayed %s (%d entries) into SomaMemory", path.name, len(batch["entries"]))
        return replayed
