"""A durable local journal for /remember while SomaMemory is down (SOMABRAIN_OUTBOX_DIR, a PVC in Kubernetes).

Each accepted write is one batch file, written in full to a temporary name, fsync'd, renamed into place and the
directory fsync'd, before the client is answered: an acknowledged write survives a crash, and a failed append leaves
nothing behind. `replay()` sends the files, oldest first, to SomaMemory (writes are idempotent by id) and removes
each only after SomaMemory confirmed it.

Three things keep replay honest when the directory is shared or the data is damaged:
- replay holds an exclusive `flock` on `.lock`, so two workers or pods never send the same batch twice;
- a file that cannot be parsed (torn by a crash or a full disk) is logged, renamed `*.corrupt` and skipped, so it
  does not block the batches after it;
- `forget()` tombstones a journalled id when the client deletes it, so replay does not resurrect it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Sender = Callable[[dict[str, Any]], Awaitable[None]]
Forgetter = Callable[[dict[str, Any]], Awaitable[None]]
_ENTRY_KEYS = frozenset({"tenant", "id", "content", "metadata", "importance"})


class JournalError(Exception):
    """The journal directory is missing or not writable."""


class CorruptBatch(ValueError):
    """A batch file is not a complete journal batch (torn write, truncation, foreign file)."""


def _fsync_dir(directory: Path) -> None:
    """Make a create, rename or unlink in `directory` durable: without it a crash can undo the entry."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (signals, a full disk); loop, and fail rather than keep a partial file."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "the journal write made no progress")
        view = view[written:]


def _parse(data: bytes) -> list[dict[str, Any]]:
    """The entries of a batch file, or CorruptBatch when it is not a whole version-1 batch."""
    try:
        batch = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptBatch(f"not JSON: {exc}") from None
    if not isinstance(batch, dict) or batch.get("version") != 1 or not isinstance(batch.get("entries"), list):
        raise CorruptBatch("not a version-1 batch")
    entries: list[Any] = batch["entries"]
    if not all(isinstance(e, dict) and _ENTRY_KEYS <= e.keys() for e in entries):
        raise CorruptBatch("an entry lacks tenant, id, content, metadata or importance")
    return entries


class MemoryJournal:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory) / "memory-journal"
        self.tombstones = self.dir / "tombstones"

    def ensure(self) -> None:
        try:
            self.tombstones.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"cannot create the journal directory {self.dir}: {exc.strerror}") from exc
        if not os.access(self.dir, os.W_OK):
            raise JournalError(f"the journal directory {self.dir} is not writable")

    def append(self, entries: list[dict[str, Any]]) -> Path:
        """Durably write one batch; returns its file once it is on disk. On failure no file (nor temp) remains."""
        self.ensure()
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        tmp = self.dir / f".{name}.tmp"
        final = self.dir / name
        data = json.dumps({"version": 1, "entries": entries}).encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            _fsync_dir(self.dir)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return final

    def discard(self, path: Path) -> None:
        """Drop a batch that was written but never acknowledged (the request failed after journalling it).

        The directory is fsync'd so that a crash right after cannot bring the unacknowledged batch back.
        """
        path.unlink(missing_ok=True)
        _fsync_dir(self.dir)

    def pending(self) -> list[Path]:
        if not self.dir.exists():
            return []
        return sorted(p for p in self.dir.iterdir() if p.suffix == ".json" and not p.name.startswith("."))

    def _tombstone(self, tenant: str, item_id: str) -> Path:
        """Tenants are free text: the file name is a digest, never a path the tenant chooses."""
        return self.tombstones / hashlib.sha256(f"{tenant}\0{item_id}".encode()).hexdigest()

    def forget(self, tenant: str, item_id: str) -> bool:
        """Tombstone `item_id` if a pending batch holds it, so replay skips it; True when it was journalled."""
        if not any(e["tenant"] == tenant and e["id"] == item_id for _, entries in self._readable() for e in entries):
            return False
        self.ensure()
        fd = os.open(self._tombstone(tenant, item_id), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(self.tombstones)
        return True

    def _forgotten(self, entry: dict[str, Any]) -> bool:
        return self._tombstone(entry["tenant"], entry["id"]).exists()

    def _readable(self) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
        """Each pending batch with its entries; a corrupt one is set aside (renamed, logged) and left out."""
        for path in self.pending():
            try:
                yield path, _parse(path.read_bytes())
            except FileNotFoundError:  # another replayer finished it meanwhile
                continue
            except CorruptBatch as exc:
                log.error("journal batch %s is corrupt (%s); set aside as %s.corrupt, not replayed",
                          path.name, exc, path.name)
                with contextlib.suppress(FileNotFoundError):  # another process set it aside first
                    os.replace(path, path.with_name(path.name + ".corrupt"))

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[bool]:
        """Hold the directory's replay lock if no other process does; yields whether this one got it."""
        self.ensure()
        fd = os.open(self.dir / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing releases the lock

    async def replay(self, send: Sender, forget: Forgetter) -> int:
        """Send every journalled entry, oldest file first; stops at the first failure (the rest wait).

        Returns 0 at once when another replayer holds the lock. A tombstoned entry is not sent; one tombstoned while
        it was being sent is deleted again with `forget`, so a delete racing the replay still wins.
        """
        with self._exclusive() as mine:
            if not mine:
                return 0
            replayed = 0
            for path, entries in self._readable():
                for entry in entries:
                    if self._forgotten(entry):
                        continue
                    await send(entry)
                    replayed += 1
                    if self._forgotten(entry):
                        await forget(entry)
                self._finish(path, entries)
                log.info("replayed %s (%d entries) into SomaMemory", path.name, len(entries))
            return replayed

    def _finish(self, path: Path, entries: list[dict[str, Any]]) -> None:
        """Remove a replayed batch, then its tombstones: they only matter while the batch exists."""
        path.unlink()
        _fsync_dir(self.dir)
        for entry in entries:
            self._tombstone(entry["tenant"], entry["id"]).unlink(missing_ok=True)
