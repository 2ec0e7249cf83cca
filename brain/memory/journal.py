"""A durable local journal for /remember while SomaMemory is down (SOMABRAIN_JOURNAL_DIR, a PVC in Kubernetes).

This module is the one owner of the journal's format: the batch files under `DIR/memory-journal/`, their entries
(`Entry`), the tombstones and the replay lock. Operators and `somabrain migrate` reach it through its CLI, run where
the journal lives (the API's container), never by reading the files themselves:

    python3 -m brain.memory.journal export            # {"NAME.json": base64 of the batch, ...} on stdout
    python3 -m brain.memory.journal import [--framed] # the same JSON on stdin; {"wrote", "kept", "clash"} on stdout

Each accepted write is one batch file, written in full to a temporary name, fsync'd, renamed into place and the
directory fsync'd, before the client is answered: an acknowledged write survives a crash, and a failed append leaves
nothing behind. `replay()` sends the files, oldest first, to SomaMemory (writes are idempotent by id) and removes
each only after SomaMemory confirmed it.

Three things keep replay honest when the directory is shared or the data is damaged:
- replay holds an exclusive `flock` on `.lock`, so two workers or pods never send the same batch twice;
- a file that cannot be parsed (torn by a crash or a full disk) is logged, renamed `*.corrupt` and skipped, so it
  does not block the batches after it;
- `forget()` tombstones a journalled id when the client deletes it, so replay does not resurrect it.

Export and import (`export_files`, `import_files`) keep the same three: export leaves out tombstoned entries (a
deleted memory must not come back in the target) and changes nothing in the source, and import writes each batch as
`append` does, keeps a same-named batch with the same bytes and never overwrites one with other bytes (a clash).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import struct
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypedDict

from brain.errors import ConfigError
from brain.settings import journal_dir_from_env

log = logging.getLogger(__name__)


class Entry(TypedDict):
    """One journalled /remember write: what replay sends to SomaMemory (`MemoryClient.remember`)."""

    tenant: str
    id: str
    content: str
    metadata: dict[str, Any]
    importance: float


Sender = Callable[[Entry], Awaitable[None]]
Forgetter = Callable[[Entry], Awaitable[None]]
_ENTRY_KEYS = Entry.__required_keys__


class JournalError(Exception):
    """The journal directory is missing or not writable."""


class CorruptBatch(ValueError):
    """A batch file is not a complete journal batch (torn write, truncation, foreign file)."""


@dataclass
class Imported:
    """What `import_files` did, by batch name: the import's summary (its JSON on the CLI's stdout)."""

    wrote: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    clash: list[str] = field(default_factory=list)


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


def _write_file(directory: Path, name: str, data: bytes) -> Path:
    """Durably write `directory/name`: in full to a temporary name, fsync'd, renamed into place, the directory
    fsync'd. On failure no file (nor temp) remains."""
    tmp = directory / f".{name}.tmp"
    final = directory / name
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        _fsync_dir(directory)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def _encode(entries: list[Entry]) -> bytes:
    return json.dumps({"version": 1, "entries": entries}).encode()


def is_batch_name(name: str) -> bool:
    """A name a batch may have: `NAME.json` in the journal's own folder (no directory part, no leading dot, which
    marks temporary files), as `pending()` lists them."""
    return name.endswith(".json") and not name.startswith(".") and Path(name).name == name and "\0" not in name


def _parse(data: bytes) -> list[Entry]:
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

    def append(self, entries: list[Entry]) -> Path:
        """Durably write one batch; returns its file once it is on disk. On failure no file (nor temp) remains."""
        self.ensure()
        return _write_file(self.dir, f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json", _encode(entries))

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

    def _forgotten(self, entry: Entry) -> bool:
        return self._tombstone(entry["tenant"], entry["id"]).exists()

    def _readable(self) -> Iterator[tuple[Path, list[Entry]]]:
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

    def _finish(self, path: Path, entries: list[Entry]) -> None:
        """Remove a replayed batch, then its tombstones: they only matter while the batch exists."""
        path.unlink()
        _fsync_dir(self.dir)
        for entry in entries:
            self._tombstone(entry["tenant"], entry["id"]).unlink(missing_ok=True)

    # --- moving a journal to another environment (somabrain migrate) ------------------------------------------
    def export_files(self) -> dict[str, bytes]:
        """Every pending batch, by name, oldest first, for another environment's journal. Changes nothing here.

        Entries tombstoned since they were journalled are left out (a batch of nothing else, entirely): their delete
        was acknowledged, so the target must not replay them. A batch that is not whole goes as it is, and the
        target's replay sets it aside as this one's would. A batch replayed meanwhile is gone, and not exported.
        """
        files: dict[str, bytes] = {}
        for path in self.pending():
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # replayed meanwhile
                continue
            try:
                entries = _parse(data)
            except CorruptBatch as exc:
                log.warning("journal batch %s is corrupt (%s); exported as it is", path.name, exc)
                files[path.name] = data
                continue
            live = [e for e in entries if not self._forgotten(e)]
            if len(live) < len(entries):
                log.warning("journal batch %s: %d of %d entries were deleted since, and are not exported",
                            path.name, len(entries) - len(live), len(entries))
                if not live:
                    continue
                data = _encode(live)
            files[path.name] = data
        return files

    def import_files(self, files: Mapping[str, bytes]) -> Imported:
        """Write each batch of `files` (name -> bytes, as `export_files` gives them) that this journal lacks, each as
        durably as `append`; a same-named batch is kept when its bytes are the same (a rerun) and is a clash, left
        as it is, when they differ. ValueError, before anything is written, when a name is not a batch's."""
        foreign = [name for name in files if not is_batch_name(name)]
        if foreign:
            raise ValueError(f"not journal batch names (NAME.json, no directory, no leading dot): {foreign}")
        self.ensure()
        done = Imported()
        for name, data in files.items():
            try:
                held = (self.dir / name).read_bytes()
            except FileNotFoundError:
                (self.dir / f".{name}.tmp").unlink(missing_ok=True)  # left by an import that was interrupted
                _write_file(self.dir, name, data)
                done.wrote.append(name)
                continue
            (done.kept if held == data else done.clash).append(name)
        return done


# --- the operator CLI: python3 -m brain.memory.journal export|import ---------------------------------------------
PROG = "python3 -m brain.memory.journal"
EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
#: `import --framed`: the JSON follows an 8-byte big-endian length, for callers that cannot close stdin (the
#: Kubernetes exec protocol; see Target.exec in targets/base.py).
_FRAME = struct.Struct(">Q")


class Refused(ValueError):
    """The CLI's input is not an import it may write: nothing was written."""


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = stream.read(min(size - len(data), 1 << 20))
        if not chunk:
            raise Refused(f"stdin ended early: {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def read_framed(stream: BinaryIO) -> bytes:
    (size,) = _FRAME.unpack(_read_exactly(stream, _FRAME.size))
    return _read_exactly(stream, size)


def decode_files(payload: bytes) -> dict[str, bytes]:
    """The import's input, `{"NAME.json": "base64 of the batch", ...}`, as name -> bytes; Refused otherwise."""
    try:
        doc = json.loads(payload)
    except ValueError as exc:
        raise Refused(f"the input is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        raise Refused('the input is not a JSON object {"NAME.json": "base64 of the batch", ...}')
    files: dict[str, bytes] = {}
    for name, b64 in doc.items():
        try:
            files[name] = base64.b64decode(b64, validate=True)
        except binascii.Error as exc:
            raise Refused(f"{name}: not base64 ({exc})") from None
    return files


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Export or import the API's /remember journal (the directory SOMABRAIN_JOURNAL_DIR "
        "names), as JSON {\"NAME.json\": \"base64 of the batch\", ...}. Run it where the journal lives.")
    sub = p.add_subparsers(dest="action", required=True)
    export_help = "print the pending batches (deleted entries left out); changes nothing"
    sub.add_parser("export", help=export_help, description=export_help)
    import_help = ('write the batches read from stdin that the journal lacks; print {"wrote": [...], "kept": [...], '
                   '"clash": [...]} (a clash, a same-named batch with other bytes, is not written: exit 0 all the '
                   "same, the caller decides)")
    im = sub.add_parser("import", help=import_help, description=import_help)
    im.add_argument("--framed", action="store_true",
                    help="stdin holds an 8-byte big-endian length, then that many bytes of JSON (for a caller that "
                    "cannot close stdin); without it the JSON runs to the end of stdin")
    return p


def main(argv: list[str] | None = None) -> int:
    """0: done (the JSON on stdout); 1: the journal cannot be used (its variable, its directory); 2: refused input,
    nothing written."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format=f"{PROG}: %(levelname)s: %(message)s")
    try:
        journal = MemoryJournal(journal_dir_from_env(os.environ))
        if args.action == "export":
            out: dict[str, Any] = {n: base64.b64encode(d).decode() for n, d in journal.export_files().items()}
        else:
            payload = read_framed(sys.stdin.buffer) if args.framed else sys.stdin.buffer.read()
            out = asdict(journal.import_files(decode_files(payload)))
    except ValueError as exc:  # Refused, or import_files's refusal of a name
        print(f"{PROG} {args.action}: refused, nothing written: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (ConfigError, JournalError, OSError) as exc:
        print(f"{PROG} {args.action}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    sys.stdout.write(json.dumps(out) + "\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
