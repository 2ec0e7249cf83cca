"""Pieces of `somabrain migrate` that need no Docker: the journal commands (run as the workload runs them, a real
python3 with SOMABRAIN_JOURNAL_DIR, on what migrate sends them), the stream splitter, the refusal of malformed,
hostile or tampered bundles (through the CLI, against the fake cluster: the error path of a bundle refused before the
target is touched), and the psql command import runs in the postgres workload, run here as the workload runs it,
against a real Postgres."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from brain.memory.journal import Entry, MemoryJournal
from localservers.servers import PostgresServer
from ops import migrate, pg
from ops.common import OpsError
from tests.ops.fake_cluster import REPO, Cluster


def run_in_workload(argv: list[str], journal_dir: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """One of migrate's journal commands as the API's workload runs it: its python3 (this one here), the journal's
    directory in SOMABRAIN_JOURNAL_DIR as the ConfigMap sets it."""
    assert argv[0] == "python3"
    env = {**os.environ, "SOMABRAIN_JOURNAL_DIR": str(journal_dir)}
    env.pop("SOMABRAIN_OUTBOX_DIR", None)
    proc = subprocess.run([sys.executable, *argv[1:]], input=stdin, capture_output=True, env=env, cwd=REPO,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_journal_round_trip_is_idempotent_and_refuses_clashes(tmp_path: Path) -> None:
    """Export's JSON into a bundle's journal/, then import's input and summary, as migrate builds and reads them."""
    source = MemoryJournal(tmp_path / "source")
    names = [source.append([Entry(tenant="t", id=f"id-{n}", content="c", metadata={}, importance=1.0)]).name
             for n in range(2)]
    files: dict[str, str] = json.loads(run_in_workload(migrate.JOURNAL_EXPORT, tmp_path / "source").stdout)
    assert sorted(files) == names
    (tmp_path / "bundle" / "journal").mkdir(parents=True)
    listed = []
    for name, b64 in files.items():
        path = tmp_path / "bundle" / "journal" / name
        path.write_bytes(base64.b64decode(b64))
        listed.append({"file": f"journal/{name}", "sha256": migrate.sha256_file(path)})
    stdin = migrate.journal_input(tmp_path / "bundle", listed)

    def imported() -> str:
        return migrate.journal_outcome(run_in_workload(migrate.JOURNAL_IMPORT, tmp_path / "target", stdin).stdout)

    assert imported() == "2 written, 0 already there"
    assert [p.name for p in MemoryJournal(tmp_path / "target").pending()] == names
    assert imported() == "0 written, 2 already there"
    (tmp_path / "target" / "memory-journal" / names[0]).write_bytes(b"other")
    with pytest.raises(OpsError, match=rf"same name but other content in the target: \['{names[0]}'\]"):
        imported()


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


ROW = b"1\ta\n"


def bundle(root: Path, data: bytes = ROW, journal: dict[str, bytes] | None = None, **override: object) -> Path:
    """A bundle of table somabrain.outbox holding `data`, whose manifest agrees with its files (sha256, rows)."""
    (root / "postgres").mkdir(parents=True, exist_ok=True)
    path = root / "postgres" / "somabrain.outbox.copy"
    path.write_bytes(data)
    table = {"schema": "somabrain", "table": "outbox", "columns": ["seq", "payload"], "key": ["seq"],
             "file": "postgres/somabrain.outbox.copy", "rows": data.count(b"\n"), "sha256": migrate.sha256_file(path),
             "checksum": "1:42", **override}
    files = []
    for name, body in (journal or {}).items():
        files.append({"file": name, "sha256": hashlib.sha256(body).hexdigest()})
    (root / "manifest.json").write_text(json.dumps({
        "format": migrate.FORMAT, "postgres": {"schema_versions": {}, "tables": [table]}, "journal": files}))
    return root


def manifest_sha(root: Path) -> str:
    return hashlib.sha256((root / "manifest.json").read_bytes()).hexdigest()


def test_open_bundle_accepts_a_good_one_and_refuses_tampering(tmp_path: Path) -> None:
    good = bundle(tmp_path / "good", b"1\t{\"k\": \"a\\\\b\\tc\"}\n2\t\\N\n", checksum="2:42")
    assert [e.label for e in migrate.open_bundle(good, manifest_sha(good)).tables] == ["somabrain.outbox"]
    for name, override in {
        "injection": {"table": 'outbox"; DROP TABLE x; --'},
        "checksum": {"checksum": "1:42'; DROP"},
        "newline-identifier": {"table": "outbox\n"},  # `$` of re.match also matches before a trailing newline
        "newline-checksum": {"checksum": "1:42\n"},
        "path": {"file": "../../etc/passwd"},
        "absolute": {"file": "/etc/passwd"},
        "dotdot": {"file": "postgres/.."},
        "rows": {"rows": 5},
        "sha": {"sha256": "0" * 64},
    }.items():
        path = bundle(tmp_path / name, **override)
        with pytest.raises(OpsError, match="refusing to import"):
            migrate.open_bundle(path)


@pytest.mark.parametrize("data", [
    b"1\ta\n\\.\nCREATE TABLE public.pwned (x int);\n",  # end the COPY, then SQL
    b"1\ta\n\\.\n\\! touch /tmp/pwned\n",  # end the COPY, then a shell command
    b"1\ta\\.\n",  # the marker at the end of a line (PostgreSQL before 18 takes it there too)
    b"1\ta\n2\tb",  # no final newline: the marker import appends would not stand on a line of its own
    b"1\ta\r\n",  # COPY writes a carriage return as \r
    b"1\ta\tb\n",  # more fields than columns
], ids=["sql", "shell", "mid-line", "no-newline", "cr", "fields"])
def test_open_bundle_refuses_data_that_is_not_copy_text(tmp_path: Path, data: bytes) -> None:
    root = bundle(tmp_path, data)
    with pytest.raises(OpsError, match="is not a row of 2 columns"):
        migrate.open_bundle(root, manifest_sha(root))


def test_open_bundle_confines_journal_paths(tmp_path: Path) -> None:
    passwd = Path("/etc/passwd").read_bytes()
    for name, rel in {"traversal": "journal/../../etc/passwd", "absolute": "/etc/passwd",
                      "outside": "postgres/somabrain.outbox.copy", "hidden": "journal/.x.json"}.items():
        with pytest.raises(OpsError, match="outside the bundle's journal/"):
            migrate.open_bundle(bundle(tmp_path / name, journal={rel: passwd}))
    linked = bundle(tmp_path / "symlink", journal={"journal/x.json": passwd})
    (linked / "journal").mkdir()
    (linked / "journal" / "x.json").symlink_to("/etc/passwd")
    with pytest.raises(OpsError, match="symlink"):
        migrate.open_bundle(linked)
    folder = bundle(tmp_path / "symlinked-folder", journal={"journal/passwd": passwd})
    (folder / "journal").symlink_to("/etc")
    with pytest.raises(OpsError, match="symlink"):
        migrate.open_bundle(folder)


def test_open_bundle_refuses_a_symlinked_table_file(tmp_path: Path) -> None:
    root = bundle(tmp_path / "b")
    outside = tmp_path / "outside.copy"
    outside.write_bytes(ROW)
    (root / "postgres" / "somabrain.outbox.copy").unlink()
    (root / "postgres" / "somabrain.outbox.copy").symlink_to(outside)
    with pytest.raises(OpsError, match="symlink"):
        migrate.open_bundle(root)


def test_the_operators_checksum_catches_a_self_consistent_tampered_bundle(tmp_path: Path) -> None:
    root = bundle(tmp_path)
    exported = manifest_sha(root)
    bundle(tmp_path, b"1\tforged\n")  # data and manifest rewritten together: they agree with each other
    assert migrate.open_bundle(root).tables  # which is all a bundle's own checksums can show
    with pytest.raises(OpsError, match="--expect-sha256 says"):
        migrate.open_bundle(root, exported)


def test_missing_manifest_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(OpsError) as exc:
        migrate.load_manifest(tmp_path)
    assert exc.value.code == 3 and "export first" in str(exc.value)


# --- the CLI: a hostile bundle is refused with exit 2 and a message, before the target is touched -------------
def hostile_bundles(tmp_path: Path) -> dict[str, tuple[Path, list[str], str]]:
    """name -> (bundle, extra CLI arguments, what the message says)."""
    tampered = bundle(tmp_path / "tampered")
    exported = manifest_sha(tampered)
    bundle(tmp_path / "tampered", b"1\tforged\n")
    linked = bundle(tmp_path / "symlink", journal={"journal/x.json": Path("/etc/passwd").read_bytes()})
    (linked / "journal").mkdir()
    (linked / "journal" / "x.json").symlink_to("/etc/passwd")
    passwd = {"journal/../../etc/passwd": Path("/etc/passwd").read_bytes()}
    return {
        "copy-end-then-sql": (bundle(tmp_path / "sql", b"1\ta\n\\.\nDROP SCHEMA somabrain CASCADE;\n"), [],
                              "line 2 is not a row"),
        "copy-end-then-shell": (bundle(tmp_path / "shell", b"1\ta\n\\.\n\\! touch /tmp/pwned\n"), [],
                                "line 2 is not a row"),
        "traversal": (bundle(tmp_path / "traversal", journal=passwd), [], "outside the bundle's journal/"),
        "absolute": (bundle(tmp_path / "absolute", journal={"/etc/passwd": b""}), [], "outside the bundle"),
        "symlink": (linked, [], "is a symlink"),
        "tampered": (tampered, ["--expect-sha256", exported.upper()], "--expect-sha256 says"),
    }


def test_import_refuses_hostile_bundles_before_touching_the_target(
        cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Error path: a bundle that must not be imported. The fake cluster records every exec; there must be none."""
    calls: list[list[str]] = []
    handler = cluster.fake.exec_handler

    def recording(pod: dict[str, object], command: list[str]) -> tuple[int, bytes, bytes]:
        calls.append(command)
        return handler(pod, command)

    cluster.fake.exec_handler = recording
    for name, (root, extra, message) in hostile_bundles(tmp_path).items():
        code = migrate.main(["import", "--to", "prod", *cluster.args(), "--from", str(root), *extra])
        captured = capsys.readouterr()
        assert code == 2, (name, captured)
        assert message in captured.err and "refusing to import" in captured.err, (name, captured.err)
        assert "Traceback" not in captured.err + captured.out, name
    assert calls == []
    assert not Path("/tmp/pwned").exists()


def test_expect_sha256_must_be_a_sha256(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        migrate.main(["import", "--to", "prod", "--from", str(bundle(tmp_path)), "--expect-sha256", "abc"])
    assert exc.value.code == 3 and "not a sha256" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        migrate.main(["import", "--help"])
    assert "--expect-sha256 HEX" in capsys.readouterr().out


# --- the psql command of import, as the postgres workload runs it, against a real Postgres ---------------------
@pytest.fixture
def workload_env(postgres_server: PostgresServer, tmp_path: Path) -> dict[str, str]:
    """The environment psql sees in the postgres workload (POSTGRES_USER/DB), pointed at a fresh database with a
    somabrain.outbox table."""
    database = "sbmig_" + tmp_path.name.replace("-", "_").lower()[-40:]
    env = {**os.environ, "POSTGRES_USER": "postgres", "POSTGRES_DB": database, "PGHOST": "127.0.0.1",
           "PGPORT": str(postgres_server.port)}
    admin = {**env, "POSTGRES_DB": "postgres"}
    sql(admin, f'DROP DATABASE IF EXISTS "{database}"', f'CREATE DATABASE "{database}"')
    sql(env, "CREATE SCHEMA somabrain", "CREATE TABLE somabrain.outbox (seq bigserial PRIMARY KEY, payload text)")
    return env


def psql(env: dict[str, str], args: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*pg.PSQL, *args], input=stdin, capture_output=True, env=env, timeout=60, check=False)


def sql(env: dict[str, str], *commands: str) -> str:
    proc = psql(env, ["-A", "-t", *(arg for c in commands for arg in ("-c", c))])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode().strip()


def entry(checksum: str, rows: int) -> migrate.TableEntry:
    return migrate.TableEntry("somabrain", "outbox", ["seq", "payload"], ["seq"], "postgres/somabrain.outbox.copy",
                              rows, "", checksum)


def checksum_of(env: dict[str, str], data: bytes) -> str:
    """The checksum of `data` once loaded (computed in a rolled-back transaction)."""
    proc = psql(env, ["-A", "-t", "-c", "BEGIN", "-c", "COPY somabrain.outbox FROM STDIN",
                      "-c", pg.checksum_sql("somabrain", "outbox"), "-c", "ROLLBACK"], data + b"\\.\n")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode().strip()


def test_import_command_loads_rows_and_sets_the_sequence(workload_env: dict[str, str]) -> None:
    data = b"1\ta\n7\t{\"x\": \"back\\\\slash\"}\n"
    e = entry(checksum_of(workload_env, data), 2)
    proc = psql(workload_env, migrate.import_args(e), migrate.copy_input(data))
    assert proc.returncode == 0, proc.stderr
    assert sql(workload_env, pg.checksum_sql("somabrain", "outbox")) == e.checksum
    assert sql(workload_env, "SELECT nextval('somabrain.outbox_seq_seq')") == "8"


def test_import_never_moves_a_sequence_back(workload_env: dict[str, str]) -> None:
    """The target's sequence is past the bundle's rows (it handed out keys before the import, as a running
    SomaMemory does, whose tombstones keep the keys of deleted rows): import leaves it there. Setting it to the
    rows' maximum made new keys collide with those tombstones (a DELETE failed with 503 in the cluster's load)."""
    sql(workload_env, "SELECT setval('somabrain.outbox_seq_seq', 100)")
    data = b"1\ta\n7\tb\n"
    e = entry(checksum_of(workload_env, data), 2)
    proc = psql(workload_env, migrate.import_args(e), migrate.copy_input(data))
    assert proc.returncode == 0, proc.stderr
    assert sql(workload_env, "SELECT nextval('somabrain.outbox_seq_seq')") == "101"


@pytest.mark.parametrize("tail", [b"CREATE TABLE public.pwned (x int);\n", b"\\! touch {marker}\n",
                                  b"COMMIT;\n\\! touch {marker}\nCREATE TABLE public.pwned (x int);\n"])
def test_rows_that_end_the_copy_run_nothing(workload_env: dict[str, str], tmp_path: Path, tail: bytes) -> None:
    """Without the bundle checks: a row `\\.` ends the COPY early, what follows is never read as commands, and the
    checksum (the export's, of the rows the manifest claims) rolls the table back."""
    marker = tmp_path / "pwned"
    data = b"1\ta\n\\.\n" + tail.replace(b"{marker}", str(marker).encode())
    claimed = entry("3:123", 3)
    proc = psql(workload_env, migrate.import_args(claimed), migrate.copy_input(data))
    assert proc.returncode != 0 and b"target checksum 1:" in proc.stderr, proc.stderr
    assert not marker.exists()
    assert sql(workload_env, "SELECT to_regclass('public.pwned') IS NULL", "SELECT count(*) FROM somabrain.outbox") \
        == "t\n0"
