"""Pieces of `somabrain migrate` that need no Docker: the journal scripts (run as the workload runs them, a real
python3 with SOMABRAIN_OUTBOX_DIR), the stream splitter, and the refusal of malformed or tampered bundles."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from ops import migrate, pg
from ops.common import OpsError


def run_script(script: str, outbox: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "SOMABRAIN_OUTBOX_DIR": str(outbox)}
    return subprocess.run([sys.executable, "-c", script], input=stdin, capture_output=True, env=env, timeout=30,
                          check=False)


def test_journal_round_trip_is_idempotent_and_refuses_clashes(tmp_path: Path) -> None:
    source = tmp_path / "source" / "memory-journal"
    source.mkdir(parents=True)
    (source / "0001-a.json").write_bytes(b'{"version": 1, "entries": [1]}')
    (source / "0002-b.json").write_bytes(b'{"version": 1, "entries": [2]}')
    read = run_script(migrate.JOURNAL_READ, tmp_path / "source")
    files = json.loads(read.stdout)
    assert sorted(files) == ["0001-a.json", "0002-b.json"]
    payload = json.dumps(files).encode()
    framed = struct.pack(">Q", len(payload)) + payload
    first = json.loads(run_script(migrate.JOURNAL_WRITE, tmp_path / "target", framed).stdout)
    assert sorted(first["wrote"]) == ["0001-a.json", "0002-b.json"]
    again = json.loads(run_script(migrate.JOURNAL_WRITE, tmp_path / "target", framed).stdout)
    assert again["wrote"] == [] and again["clash"] == []
    assert sorted(again["kept"]) == ["0001-a.json", "0002-b.json"]
    (tmp_path / "target" / "memory-journal" / "0001-a.json").write_bytes(b"other")
    clash = json.loads(run_script(migrate.JOURNAL_WRITE, tmp_path / "target", framed).stdout)
    assert clash["clash"] == ["0001-a.json"]


def test_split_stream_counts_rows_and_checks_the_snapshot(tmp_path: Path) -> None:
    table = pg.Table("somabrain", "outbox", ("seq", "payload"), ("seq",))
    stream = tmp_path / "stream"
    stream.write_bytes(b"\\SBMIG begin somabrain.outbox\n1\t\\\\SBMIG not a marker\n2\tb\n"
                       b"\\SBMIG end somabrain.outbox 2:123\n")
    (entry,) = migrate.split_stream(stream, tmp_path / "out", [table])
    assert entry.rows == 2 and entry.checksum == "2:123"
    stream.write_bytes(b"\\SBMIG begin somabrain.outbox\n1\ta\n\\SBMIG end somabrain.outbox 2:123\n")
    with pytest.raises(OpsError, match="counted 2 rows but COPY wrote 1"):
        migrate.split_stream(stream, tmp_path / "out2", [table])


def bundle(tmp_path: Path, **override: object) -> Path:
    (tmp_path / "postgres").mkdir(parents=True, exist_ok=True)
    data = tmp_path / "postgres" / "somabrain.outbox.copy"
    data.write_bytes(b"1\ta\n")
    table = {"schema": "somabrain", "table": "outbox", "columns": ["seq", "payload"], "key": ["seq"],
             "file": "postgres/somabrain.outbox.copy", "rows": 1, "sha256": migrate.sha256_file(data),
             "checksum": "1:42", **override}
    (tmp_path / "manifest.json").write_text(json.dumps({
        "format": migrate.FORMAT, "postgres": {"schema_versions": {}, "tables": [table]}, "journal": []}))
    return tmp_path


def test_verify_bundle_accepts_a_good_one_and_refuses_tampering(tmp_path: Path) -> None:
    good = bundle(tmp_path / "good")
    assert [e.label for e in migrate.verify_bundle(good, migrate.load_manifest(good))] == ["somabrain.outbox"]
    for name, override in {
        "injection": {"table": 'outbox"; DROP TABLE x; --'},
        "checksum": {"checksum": "1:42'; DROP"},
        "newline-identifier": {"table": "outbox\n"},  # `$` of re.match also matches before a trailing newline
        "newline-checksum": {"checksum": "1:42\n"},
        "path": {"file": "../../etc/passwd"},
        "rows": {"rows": 5},
        "sha": {"sha256": "0" * 64},
    }.items():
        path = bundle(tmp_path / name, **override)
        with pytest.raises(OpsError, match="refusing to import"):
            migrate.verify_bundle(path, migrate.load_manifest(path))


def test_missing_manifest_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(OpsError) as exc:
        migrate.load_manifest(tmp_path)
    assert exc.value.code == 3 and "export first" in str(exc.value)
