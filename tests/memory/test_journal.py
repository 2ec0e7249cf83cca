"""The /remember journal on a real directory: short and failed writes, torn batches, tombstones, the replay lock.

Only the error paths a real disk will not produce on demand (a short `os.write`, ENOSPC) patch `os` for that call;
everything else, including two replayers sharing the directory, runs for real.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from brain.memory.journal import Entry, MemoryJournal
from localservers.servers import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _entry(n: int, tenant: str = "t1") -> Entry:
    return Entry(tenant=tenant, id=f"id-{n}", content=f"item {n} " + "x" * 200, metadata={}, importance=1.0)


class _Replay:
    """A SomaMemory stand-in for replay's two callbacks: records what was sent and what was deleted again."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.forgotten: list[str] = []

    async def send(self, entry: Entry) -> None:
        self.sent.append(entry["id"])

    async def forget(self, entry: Entry) -> None:
        self.forgotten.append(entry["id"])


def _leftovers(journal: MemoryJournal) -> list[str]:
    return sorted(p.name for p in journal.dir.iterdir() if p.is_file() and p.name != ".lock")


async def test_a_short_write_is_completed_before_the_append_returns(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake os.write that writes at most 7 bytes a call: a real disk does this only under signals or ENOSPC."""
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
    journal = MemoryJournal(tmp_path)
    journal.append([_entry(1), _entry(2)])
    monkeypatch.undo()
    replay = _Replay()
    assert await journal.replay(replay.send, replay.forget) == 2
    assert replay.sent == ["id-1", "id-2"]


def test_a_write_that_stops_making_progress_fails_and_leaves_nothing(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake os.write: one short write, then none (a full disk); the append must raise, not acknowledge."""
    real_write = os.write
    calls: list[int] = []

    def stalling(fd: int, data: bytes) -> int:
        calls.append(len(data))
        return real_write(fd, bytes(data[:10])) if len(calls) == 1 else 0

    monkeypatch.setattr(os, "write", stalling)
    journal = MemoryJournal(tmp_path)
    with pytest.raises(OSError):
        journal.append([_entry(1)])
    assert _leftovers(journal) == []


def test_a_failed_append_removes_its_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake os.write raising ENOSPC: a real full disk cannot be had in a unit test without mounting one."""

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    journal = MemoryJournal(tmp_path)
    with pytest.raises(OSError):
        journal.append([_entry(1)])
    assert _leftovers(journal) == []


async def test_a_torn_batch_is_set_aside_and_the_others_still_replay(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    journal = MemoryJournal(tmp_path)
    journal.append([_entry(1)])
    torn = journal.append([_entry(2)])
    journal.append([_entry(3)])
    torn.write_bytes(torn.read_bytes()[:40])  # what a crash mid-write on a non-journalling filesystem leaves
    replay = _Replay()
    with caplog.at_level(logging.ERROR, logger="brain.memory.journal"):
        assert await journal.replay(replay.send, replay.forget) == 2
    assert replay.sent == ["id-1", "id-3"]
    assert f"journal batch {torn.name} is corrupt" in caplog.text
    assert journal.pending() == []
    assert _leftovers(journal) == [torn.name + ".corrupt"]  # kept for a person to inspect


async def test_a_deleted_journalled_id_is_not_replayed(tmp_path: Path) -> None:
    journal = MemoryJournal(tmp_path)
    journal.append([_entry(1), _entry(2)])
    assert journal.forget("t1", "id-1") is True
    assert journal.forget("t2", "id-2") is False  # another tenant's id is not this tenant's to tombstone
    assert journal.forget("t1", "never-journalled") is False
    replay = _Replay()
    assert await journal.replay(replay.send, replay.forget) == 1
    assert replay.sent == ["id-2"]
    assert journal.pending() == [] and list(journal.tombstones.iterdir()) == []  # tombstones go with their batch


async def test_a_delete_during_the_send_is_applied_after_it(tmp_path: Path) -> None:
    """The delete tombstones the id while replay is sending it: replay then deletes it again in SomaMemory."""
    journal = MemoryJournal(tmp_path)
    journal.append([_entry(1)])
    replay = _Replay()

    async def send_while_deleted(entry: Entry) -> None:
        await replay.send(entry)
        assert journal.forget(entry["tenant"], entry["id"]) is True

    await journal.replay(send_while_deleted, replay.forget)
    assert replay.sent == ["id-1"] and replay.forgotten == ["id-1"]


def test_discard_fsyncs_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A spy on os.fsync (the real fsync still runs): whether a directory was synced cannot be seen afterwards."""
    journal = MemoryJournal(tmp_path)
    path = journal.append([_entry(1)])
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    journal.discard(path)
    assert not path.exists()
    assert journal.dir.stat().st_ino in synced


_REPLAYER = textwrap.dedent("""
    import asyncio, os, sys, time
    from pathlib import Path
    from brain.memory.journal import Entry, MemoryJournal

    directory, log, go, ready = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])

    async def send(entry):
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, (entry["id"] + "\\n").encode())
        os.close(fd)
        await asyncio.sleep(0.01)  # a real SomaMemory round trip: the window two replayers would overlap in

    async def forget(entry):
        raise AssertionError("nothing is deleted in this test")

    ready.touch()
    while not go.exists():
        time.sleep(0.001)
    print(asyncio.run(MemoryJournal(directory).replay(send, forget)))
""")


def test_two_replaying_processes_never_send_one_entry_twice(tmp_path: Path) -> None:
    journal = MemoryJournal(tmp_path / "shared")
    for n in range(30):
        journal.append([_entry(n)])
    log, go = tmp_path / "sent.log", tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", _REPLAYER, str(tmp_path / "shared"), str(log), str(go), str(r)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in ready]
    wait_for(lambda: all(r.exists() for r in ready), "both replayers to start")
    go.touch()  # both released together, so without the lock they would replay side by side
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    sent = log.read_text().split()
    assert sorted(sent) == sorted(f"id-{n}" for n in range(30))  # each exactly once
    assert sorted(int(out) for out, _ in results) == [0, 30]  # one replayer held the lock; the other stood back
    assert journal.pending() == []
