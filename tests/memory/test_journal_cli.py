"""`python3 -m brain.memory.journal export|import`, run for real as `somabrain migrate` runs it in the API's workload:
a child process on a real journal directory, JSON on its stdout and stdin, the directory named by the environment."""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from brain.memory.journal import Entry, MemoryJournal

ROOT = Path(__file__).resolve().parents[2]


def run(action: str, env: dict[str, str], stdin: bytes = b"", *args: str) -> subprocess.CompletedProcess[bytes]:
    """The CLI with exactly the journal variables in `env` (none inherited from this process)."""
    base = {k: v for k, v in os.environ.items() if k not in ("SOMABRAIN_JOURNAL_DIR", "SOMABRAIN_OUTBOX_DIR")}
    return subprocess.run([sys.executable, "-m", "brain.memory.journal", action, *args], input=stdin,
                          capture_output=True, env={**base, **env}, cwd=ROOT, timeout=60, check=False)


def at(directory: Path) -> dict[str, str]:
    return {"SOMABRAIN_JOURNAL_DIR": str(directory)}


def entry(n: int, tenant: str = "t1") -> Entry:
    return Entry(tenant=tenant, id=f"id-{n}", content=f"item {n}", metadata={"n": n}, importance=0.5)


def exported(result: subprocess.CompletedProcess[bytes]) -> dict[str, bytes]:
    assert result.returncode == 0, result.stderr
    return {name: base64.b64decode(b64) for name, b64 in json.loads(result.stdout).items()}


def payload(files: dict[str, bytes]) -> bytes:
    return json.dumps({name: base64.b64encode(data).decode() for name, data in files.items()}).encode()


def framed(data: bytes) -> bytes:
    return struct.pack(">Q", len(data)) + data


def summary(result: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def snapshot(journal: MemoryJournal) -> dict[str, bytes]:
    """Every file under the journal's folder (tombstones, temp and set-aside files included), by relative path."""
    return {str(p.relative_to(journal.dir)): p.read_bytes() for p in sorted(journal.dir.rglob("*")) if p.is_file()}


def test_export_prints_the_pending_batches_without_deleted_entries_and_changes_nothing(tmp_path: Path) -> None:
    journal = MemoryJournal(tmp_path)
    whole = journal.append([entry(1), entry(2)])
    partly_deleted = journal.append([entry(3), entry(4)])
    journal.append([entry(5)])  # all of it deleted since: not exported
    torn = journal.append([entry(6)])
    assert journal.forget("t1", "id-4") and journal.forget("t1", "id-5")
    torn.write_bytes(torn.read_bytes()[:20])  # torn after the deletes: forget() reads, and sets torn batches aside
    (journal.dir / "0000-set-aside.json.corrupt").write_bytes(b"{")
    (journal.dir / ".0000-half-written.json.tmp").write_bytes(b"{")
    before = snapshot(journal)

    result = run("export", at(tmp_path))
    files = exported(result)

    assert list(files) == [whole.name, partly_deleted.name, torn.name]  # oldest first, deleted batch left out
    assert files[whole.name] == whole.read_bytes()  # byte for byte
    assert json.loads(files[partly_deleted.name]) == {"version": 1, "entries": [entry(3)]}
    assert files[torn.name] == torn.read_bytes()  # as it is: the target's replay sets it aside
    assert snapshot(journal) == before  # nothing renamed, removed or tombstoned in the source
    err = result.stderr.decode()
    assert f"{partly_deleted.name}: 1 of 2 entries were deleted" in err and f"{torn.name} is corrupt" in err


def test_export_of_a_journal_never_written_is_empty(tmp_path: Path) -> None:
    assert exported(run("export", at(tmp_path / "none"))) == {}
    assert not (tmp_path / "none").exists()


def test_import_writes_what_is_missing_keeps_what_is_there_and_reports_clashes(tmp_path: Path) -> None:
    source = MemoryJournal(tmp_path / "source")
    first, second = source.append([entry(1)]), source.append([entry(2), entry(3, "t2")])
    files = exported(run("export", at(tmp_path / "source")))
    target = MemoryJournal(tmp_path / "target")

    assert summary(run("import", at(tmp_path / "target"), payload(files))) == {
        "wrote": [first.name, second.name], "kept": [], "clash": []}
    assert {p.name: p.read_bytes() for p in target.pending()} == files
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in target.pending())  # as private as an appended batch

    again = summary(run("import", at(tmp_path / "target"), framed(payload(files)), "--framed"))
    assert again == {"wrote": [], "kept": [first.name, second.name], "clash": []}  # a rerun changes nothing

    (target.dir / first.name).write_bytes(b"other")
    (target.dir / second.name).unlink()  # replayed in the target meanwhile: written again (replay is by id)
    (target.dir / f".{second.name}.tmp").write_bytes(b"left by an interrupted import")
    clash = summary(run("import", at(tmp_path / "target"), payload(files)))
    assert clash == {"wrote": [second.name], "kept": [], "clash": [first.name]}
    assert (target.dir / first.name).read_bytes() == b"other"  # a clash is never overwritten
    assert (target.dir / second.name).read_bytes() == files[second.name]
    assert not (target.dir / f".{second.name}.tmp").exists()


@pytest.mark.parametrize(("stdin", "args", "message"), [
    (framed(b'{"a.json": ""}')[:-3], ["--framed"], "stdin ended early"),
    (b"\x00\x00\x00", ["--framed"], "stdin ended early"),
    (b"not json", [], "the input is not JSON"),
    (b'["a.json"]', [], "not a JSON object"),
    (b'{"a.json": 1}', [], "not a JSON object"),
    (b'{"a.json": "not base64!"}', [], "a.json: not base64"),
    (payload({"../../escaped.json": b"{}"}), [], "not journal batch names"),
    (payload({"sub/dir.json": b"{}"}), [], "not journal batch names"),
    (payload({".hidden.json": b"{}"}), [], "not journal batch names"),
    (payload({"0001-a.json": b"{}", "notes.txt": b"{}"}), [], "['notes.txt']"),
])
def test_import_refuses_input_it_may_not_write_and_writes_nothing(tmp_path: Path, stdin: bytes, args: list[str],
                                                                  message: str) -> None:
    result = run("import", at(tmp_path), stdin, *args)
    err = result.stderr.decode()
    assert result.returncode == 2 and "refused, nothing written" in err and message in err, err
    assert result.stdout == b"" and "Traceback" not in err
    assert not (tmp_path / "memory-journal").exists()
    assert not (tmp_path.parent / "escaped.json").exists()


def test_the_old_variable_still_names_the_directory_with_a_warning(tmp_path: Path) -> None:
    journal = MemoryJournal(tmp_path)
    batch = journal.append([entry(1)])
    result = run("export", {"SOMABRAIN_OUTBOX_DIR": str(tmp_path)})
    assert list(exported(result)) == [batch.name]
    assert "SOMABRAIN_OUTBOX_DIR is the old name of SOMABRAIN_JOURNAL_DIR" in result.stderr.decode()


def test_two_directories_named_at_once_are_refused(tmp_path: Path) -> None:
    env = {"SOMABRAIN_JOURNAL_DIR": str(tmp_path / "new"), "SOMABRAIN_OUTBOX_DIR": str(tmp_path / "old")}
    for action in ("export", "import"):
        result = run(action, env, payload({}))
        err = result.stderr.decode()
        assert result.returncode == 1 and "SOMABRAIN_JOURNAL_DIR" in err and "SOMABRAIN_OUTBOX_DIR" in err, err
        assert result.stdout == b"" and "Traceback" not in err
