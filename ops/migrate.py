"""`somabrain migrate export|import`: move SomaBrain's data between environments (compose -> Kubernetes).

    somabrain migrate export --from dev  --out DIR      [--compose-project P]
    somabrain migrate import --to   prod --from DIR     [--kube-context C] [--expect-sha256 HEX]
    somabrain migrate verify --on   prod --from DIR     [--expect-sha256 HEX]  (compare an environment with a bundle)

What moves:
- Postgres, schemas `somabrain` (the API: memory_index, audit_events, outbox = the events not yet in Kafka) and
  `somamemory` (SomaMemory's memories and their change feed): one COPY per table, all in ONE repeatable-read
  snapshot, run by psql inside the postgres workload. `schema_migrations` is compared, not copied: the target's
  services create the schema.
- The API's memory journal (SOMABRAIN_JOURNAL_DIR/memory-journal/*.json, writes accepted while SomaMemory was down),
  through the journal's own CLI in the API's workload (`python3 -m brain.memory.journal export|import`, which owns
  the format): this tool moves only the JSON it prints and reads, `{"NAME.json": base64 of the batch}`.

The bundle's manifest.json records, per table, the row count, the sha256 of the data file and a content checksum
(see ops.pg.checksum_sql). Export prints the manifest's own sha256; import takes it back as --expect-sha256 HEX,
because checksums a bundle carries prove only that it agrees with itself. Import treats the bundle as untrusted input
and checks all of it before it contacts the target: the manifest's sha256 (when given), every path (only
postgres/SCHEMA.TABLE.copy and journal/NAME, no symlinks), every file against the manifest, and every data line
against the grammar of COPY text. Then, per table, in one transaction: COPY in, recompute the checksum in the
target, and COMMIT only when it equals the manifest's. The rows reach psql only as COPY data on stdin, never as
part of a script (see import_args). A table whose target content already equals the export is skipped, so a rerun
after an interruption resumes where it stopped, and a finished import is a no-op. A non-empty target table that
differs is refused: import goes into a fresh environment (start it first, so its services create the schema).
"""

# ruff: noqa: S608  SQL text is built only from identifiers that pass ops.pg.identifier() and checksums that
# match ops.migrate.CHECKSUM (a bundle's manifest is checked before any of it reaches SQL).

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import re
import struct
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from conformance.inventory import API
from ops import pg
from ops.common import (
    EXIT_BROKEN,
    EXIT_OK,
    EXIT_USAGE,
    OpsError,
    UsageParser,
    add_target_arguments,
    build_target,
    fail,
    reachable,
)
from targets.base import ProbeError, Target

PROG = "somabrain migrate"
FORMAT = "somabrain-migration/1"
MARK = "\\SBMIG"  # COPY text never starts a line with backslash + 'S', so these lines cannot be data
CHECKSUM = re.compile(r"^[0-9]+:[0-9]+$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
JOURNAL_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,200}$")  # no leading dot: no `..`, no hidden files
# One field of COPY text as COPY TO writes it: NULL, or characters where a backslash only starts the escapes it
# emits. So no exported line can hold `\.` (the end-of-data marker); possessive, so a bad line fails in linear time.
COPY_FIELD = rb"(?:\\N|(?:[^\\\t\n\r]|\\[\\bfnrtv])*+)"

#: The journal's CLI in the API's image (the API's own code reads and writes its journal: files, tombstones, names).
#: export prints {"NAME.json": base64}; import reads the same, framed (an 8-byte big-endian length first, since the
#: exec protocol cannot close stdin), writes each missing file and prints {"wrote", "kept", "clash"}: a same-named
#: file with other content is a clash, left as it is.
JOURNAL_CLI = ["python3", "-m", "brain.memory.journal"]
JOURNAL_EXPORT = [*JOURNAL_CLI, "export"]
JOURNAL_IMPORT = [*JOURNAL_CLI, "import", "--framed"]


@dataclass
class TableEntry:
    schema: str
    table: str
    columns: list[str]
    key: list[str]
    file: str
    rows: int
    sha256: str
    checksum: str

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.table}"

    def as_table(self) -> pg.Table:
        return pg.Table(self.schema, self.table, tuple(self.columns), tuple(self.key))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def say(message: str) -> None:
    print(message, flush=True)


# --- export ------------------------------------------------------------------------------------------------
def export_script(tables: list[pg.Table]) -> str:
    parts = [pg.SESSION, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;"]
    for t in tables:
        cols = ", ".join(f'"{pg.identifier(c)}"' for c in t.columns)
        order = ", ".join(f'"{pg.identifier(c)}"' for c in t.key)
        parts.append(f"SELECT '{MARK} begin {t.label}';")
        source = pg.qualified(t.schema, t.name)
        parts.append(f"COPY (SELECT {cols} FROM {source} ORDER BY {order}) TO STDOUT;")
        parts.append(f"SELECT '{MARK} end {t.label} ' || ({pg.checksum_sql(t.schema, t.name)});")
    parts += ["COMMIT;", "\\q", ""]
    return "\n".join(parts)


def split_stream(stream: Path, out: Path, tables: list[pg.Table]) -> list[TableEntry]:
    """Cut the one-session COPY stream into one file per table; count rows and hash each file."""
    by_label = {t.label: t for t in tables}
    entries: list[TableEntry] = []
    current: Any = None
    label, rows = "", 0
    (out / "postgres").mkdir(parents=True, exist_ok=True)
    with stream.open("rb") as fh:
        for line in fh:
            if line.startswith(MARK.encode()):
                words = line.decode().split()
                if words[1] == "begin":
                    label, rows = words[2], 0
                    current = (out / "postgres" / f"{label}.copy").open("wb")
                    continue
                if words[1] == "end" and current is not None:
                    current.close()
                    current = None
                    t = by_label[label]
                    path = out / "postgres" / f"{label}.copy"
                    checksum = words[3]
                    if int(checksum.split(":")[0]) != rows:
                        raise OpsError(f"{label}: the snapshot counted {checksum.split(':')[0]} rows but COPY "
                                       f"wrote {rows}")
                    entries.append(TableEntry(t.schema, t.name, list(t.columns), list(t.key),
                                              f"postgres/{label}.copy", rows, sha256_file(path), checksum))
                    continue
            if current is None:
                raise OpsError(f"unexpected psql output outside a table: {line[:200]!r}")
            current.write(line)
            rows += 1
    if current is not None:
        current.close()
        raise OpsError(f"the export stream ended inside table {label}")
    if [e.label for e in entries] != [t.label for t in tables]:
        raise OpsError(f"the export stream holds {[e.label for e in entries]}, expected {[t.label for t in tables]}")
    return entries


def export(target: Target, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    tables = pg.tables(target)
    if not tables:
        raise OpsError(f"{target.describe()}: no tables in schemas {', '.join(pg.SCHEMAS)}; is this SomaBrain's "
                       "database, and have its services started once?")
    versions = pg.schema_versions(target)
    say(f"export from {target.describe()}: {len(tables)} tables, schema versions {versions}")
    with tempfile.NamedTemporaryFile(dir=out, prefix=".stream-", delete=False) as raw:
        stream = Path(raw.name)
        try:
            pg.psql(target, args=["-A", "-t"], stdin=export_script(tables).encode(), sink=raw).check("psql COPY export")
        except ProbeError as exc:
            stream.unlink(missing_ok=True)
            raise OpsError(str(exc)) from None
    try:
        entries = split_stream(stream, out, tables)
    finally:
        stream.unlink(missing_ok=True)
    for e in entries:
        say(f"  {e.label:<26} {e.rows:>8} rows  checksum {e.checksum}  sha256 {e.sha256[:16]}")
    journal = export_journal(target, out)
    manifest = {
        "format": FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": {"env": target.env, "target": target.describe()},
        "postgres": {"schema_versions": versions, "tables": [asdict(e) for e in entries]},
        "journal": journal,
    }
    body = (json.dumps(manifest, indent=2) + "\n").encode()
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_bytes(body)
    os.replace(tmp, manifest_path)
    say(f"wrote {manifest_path} ({sum(e.rows for e in entries)} rows, {len(journal)} journal files)")
    say(f"manifest sha256 {hashlib.sha256(body).hexdigest()}: pass it to `migrate import --expect-sha256` "
        "(through a channel other than the bundle's) so import can tell that the bundle is this one")
    return manifest


def export_journal(target: Target, out: Path) -> list[dict[str, str]]:
    result = target.exec(API.key, JOURNAL_EXPORT).check("reading the memory journal")
    files: dict[str, str] = json.loads(result.stdout or b"{}")
    folder = out / "journal"
    folder.mkdir(exist_ok=True)
    entries = []
    for name, b64 in sorted(files.items()):
        path = folder / Path(name).name
        path.write_bytes(base64.b64decode(b64))
        entries.append({"file": f"journal/{path.name}", "sha256": sha256_file(path)})
    return entries


# --- import ------------------------------------------------------------------------------------------------
@dataclass
class Bundle:
    """A bundle whose manifest, paths and files have all been checked: what import may send to a target."""

    root: Path
    manifest: dict[str, Any]
    tables: list[TableEntry]
    journal: list[dict[str, str]]


def load_manifest(bundle: Path, expect_sha256: str | None = None) -> dict[str, Any]:
    """The parsed manifest; refused when its bytes do not have the sha256 the operator expects."""
    path = bundle / "manifest.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise OpsError(f"{path} does not exist: export first (somabrain migrate export --from dev --out "
                       f"{bundle})", EXIT_USAGE) from None
    except OSError as exc:
        raise OpsError(f"{path} cannot be read: {exc}") from None
    digest = hashlib.sha256(raw).hexdigest()
    if expect_sha256 is not None and digest != expect_sha256:
        raise OpsError(f"{path} has sha256 {digest}, --expect-sha256 says {expect_sha256}: this is not the "
                       "bundle that was exported, refusing to import")
    try:
        manifest: dict[str, Any] = json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise OpsError(f"{path} is not JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise OpsError(f"{path}: not a {FORMAT} manifest, this tool reads only that format")
    return manifest


def manifest_entries(manifest: dict[str, Any]) -> list[TableEntry]:
    """The manifest's tables, each name a plain identifier, each checksum well-formed and each file exactly where
    export writes it (postgres/SCHEMA.TABLE.copy): names and checksums go into SQL, files are read from disk."""
    try:
        entries = [TableEntry(**t) for t in manifest["postgres"]["tables"]]
        for e in entries:
            for name in (e.schema, e.table, *e.columns, *e.key):
                pg.identifier(name)
            if not CHECKSUM.fullmatch(e.checksum):
                raise ValueError(f"{e.label}: malformed checksum {e.checksum!r}")
            if e.file != f"postgres/{e.label}.copy":
                raise ValueError(f"{e.label}: file {e.file!r} is outside the bundle's postgres/")
    except (KeyError, TypeError, ValueError) as exc:
        raise OpsError(f"the manifest is malformed, refusing to import: {exc}") from None
    return entries


def journal_entries(manifest: dict[str, Any]) -> list[dict[str, str]]:
    """The manifest's journal files, each journal/NAME with a plain NAME: a path from elsewhere must not make import
    read, and upload into the target, any other file of this host."""
    try:
        files = [{"file": str(f["file"]), "sha256": str(f["sha256"])} for f in manifest.get("journal", [])]
        for f in files:
            folder, _, name = f["file"].partition("/")
            if folder != "journal" or not JOURNAL_NAME.fullmatch(name):
                raise ValueError(f"journal file {f['file']!r} is outside the bundle's journal/")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise OpsError(f"the manifest is malformed, refusing to import: {exc}") from None
    return files


def confined(bundle: Path, rel: str) -> Path:
    """bundle/rel, refused (ValueError) when it or its folder is a symlink, which could lead out of the bundle; `rel`
    itself has passed manifest_entries or journal_entries, so it holds no `..` and is not absolute."""
    path = bundle / rel
    for part in (path.parent, path):
        if part.is_symlink():
            raise ValueError(f"{rel}: {part.relative_to(bundle)} is a symlink, which could lead out of the bundle")
    if not path.is_file():
        raise ValueError(f"{rel}: missing")
    return path


def copy_problem(data: bytes, entry: TableEntry) -> str | None:
    """Why `data` is not COPY text of the entry's columns as export writes it (None when it is). Such text cannot
    hold the end-of-data marker `\\.`, so a bundle that does is refused before it reaches psql at all."""
    row = re.compile(COPY_FIELD + (b"\t" + COPY_FIELD) * (len(entry.columns) - 1) + b"\n")
    rows = 0
    for rows, line in enumerate(io.BytesIO(data), start=1):
        if not row.fullmatch(line):
            return (f"{entry.file}: line {rows} is not a row of {len(entry.columns)} columns as COPY writes them "
                    f"(such as a `\\.` line or a stray backslash): {line[:80]!r}")
    if rows != entry.rows:
        return f"{entry.file}: {rows} rows, the manifest says {entry.rows}"
    return None


def file_problem(bundle: Path, rel: str, sha256: str, entry: TableEntry | None = None) -> str | None:
    """Why the bundle's file `rel` may not be imported (None when it may)."""
    try:
        data = confined(bundle, rel).read_bytes()
    except (OSError, ValueError) as exc:
        return str(exc)
    if hashlib.sha256(data).hexdigest() != sha256:
        return f"{rel}: sha256 differs from the manifest"
    return copy_problem(data, entry) if entry is not None else None


def open_bundle(root: Path, expect_sha256: str | None = None) -> Bundle:
    """The bundle, checked in full before import contacts the target: a refusal imports nothing."""
    manifest = load_manifest(root, expect_sha256)
    entries, journal = manifest_entries(manifest), journal_entries(manifest)
    problems = [p for e in entries if (p := file_problem(root, e.file, e.sha256, e)) is not None]
    problems += [p for f in journal if (p := file_problem(root, f["file"], f["sha256"])) is not None]
    if problems:
        raise OpsError("the bundle does not match its manifest, refusing to import:\n  " + "\n  ".join(problems))
    return Bundle(root, manifest, entries, journal)


def import_args(entry: TableEntry) -> list[str]:
    """psql arguments that load one table in one transaction and COMMIT only when the target's checksum equals the
    manifest's; each sequence of the table moves past the rows' values, never back (the target may have handed out
    higher ones already, e.g. SomaMemory's keys, which its tombstones keep after the rows are gone). Every command
    is a -c of this tool's SQL (names and checksum checked by manifest_entries); with -c,
    psql never reads its stdin as commands, so the rows, sent on stdin, are COPY data and nothing else: even a row
    that ended the COPY early could not run SQL or `\\!` (the checksum would then roll the table back)."""
    t = pg.qualified(entry.schema, entry.table)
    cols = ", ".join(f'"{pg.identifier(c)}"' for c in entry.columns)
    if not CHECKSUM.fullmatch(entry.checksum):
        raise OpsError(f"{entry.label}: malformed checksum {entry.checksum!r} in the manifest")
    setval = (
        "DO $$ DECLARE r record; BEGIN FOR r IN SELECT a.attname, "
        f"pg_get_serial_sequence('{t}', a.attname) AS seq FROM pg_attribute a WHERE a.attrelid = '{t}'::regclass "
        "AND a.attnum > 0 AND NOT a.attisdropped LOOP IF r.seq IS NOT NULL THEN "
        f"EXECUTE format('SELECT setval(%L, GREATEST((SELECT max(%I) FROM {t}), (SELECT last_value FROM %s), 1))', "
        "r.seq, r.attname, r.seq); "
        "END IF; END LOOP; END $$;"
    )
    check = (
        f"DO $$ DECLARE got text; BEGIN {pg.checksum_sql(entry.schema, entry.table)}"
        f" INTO got; IF got IS DISTINCT FROM '{entry.checksum}' THEN RAISE EXCEPTION "
        f"'SBMIG {entry.label}: target checksum % after import, the export says {entry.checksum}', got; "
        "END IF; END $$;"
    )
    # Triggers off while the rows go in: the bundle holds what they would derive (SomaMemory's change numbers and
    # usage counters, brain/somamemory/schema.py), and counting the copied rows again would double it. Needs the
    # superuser psql runs as in the Postgres workload.
    commands = [pg.SESSION, "SET session_replication_role = replica", "BEGIN", f"COPY {t} ({cols}) FROM STDIN",
                setval, check, "COMMIT"]
    return [arg for command in commands for arg in ("-c", command)]


def copy_input(data: bytes) -> bytes:
    """psql's stdin for import_args: the rows, then the end-of-data marker (the exec protocol cannot close stdin)."""
    return data + b"\\.\n"


def import_bundle(target: Target, bundle: Bundle) -> dict[str, str]:
    entries = bundle.tables
    say(f"bundle {bundle.root}: {len(entries)} tables and {len(bundle.journal)} journal files match the manifest")
    wanted = bundle.manifest["postgres"]["schema_versions"]
    have = pg.schema_versions(target)
    if have != wanted:
        raise OpsError(f"{target.describe()} has schema versions {have}, the export {wanted}: start the target's "
                       "services (same release as the source) so they create the schema, then import")
    present = {t.label for t in pg.tables(target)}
    missing = [e.label for e in entries if e.label not in present]
    if missing:
        raise OpsError(f"{target.describe()} has no table {', '.join(missing)}")
    before = pg.checksums(target, [e.as_table() for e in entries])
    outcome: dict[str, str] = {}
    for e in entries:
        if before[e.label] == e.checksum:
            outcome[e.label] = "already imported"
        elif not before[e.label].startswith("0:"):
            raise OpsError(f"{e.label} in {target.describe()} already holds {before[e.label].split(':')[0]} rows "
                           "that differ from the export: import only into a fresh environment")
        else:
            data = confined(bundle.root, e.file).read_bytes()
            if hashlib.sha256(data).hexdigest() != e.sha256:
                raise OpsError(f"{e.file} changed after it was checked, refusing to import it")
            result = pg.psql(target, args=import_args(e), stdin=copy_input(data))
            if result.code != 0:
                raise OpsError(f"{e.label}: import refused and rolled back: {result.stderr.strip()[-500:]}")
            outcome[e.label] = "imported"
        say(f"  {e.label:<26} {e.rows:>8} rows  checksum {e.checksum}  {outcome[e.label]}")
    journal = import_journal(target, bundle.root, bundle.journal)
    outcome["journal"] = journal
    say(f"  journal: {journal}")
    return outcome


def import_journal(target: Target, bundle: Path, files: list[dict[str, str]]) -> str:
    if not files:
        return "nothing to import"
    result = target.exec(API.key, JOURNAL_IMPORT, stdin=journal_input(bundle, files)).check("writing the journal")
    return journal_outcome(result.stdout)


def journal_input(bundle: Path, files: list[dict[str, str]]) -> bytes:
    """JOURNAL_IMPORT's stdin: the bundle's journal files as {name: base64}, framed by its length."""
    payload = json.dumps({Path(f["file"]).name: base64.b64encode(confined(bundle, f["file"]).read_bytes()).decode()
                          for f in files}).encode()
    return struct.pack(">Q", len(payload)) + payload


def journal_outcome(stdout: bytes) -> str:
    """JOURNAL_IMPORT's summary in words; OpsError for a clash (the target holds other content under a name)."""
    summary = json.loads(stdout)
    if summary["clash"]:
        raise OpsError(f"journal files with the same name but other content in the target: {summary['clash']}")
    return f"{len(summary['wrote'])} written, {len(summary['kept'])} already there"


def verify(target: Target, bundle: Path, expect_sha256: str | None = None) -> list[str]:
    """Differences between the environment's tables and the bundle (empty = equal)."""
    entries = manifest_entries(load_manifest(bundle, expect_sha256))
    now = pg.checksums(target, [e.as_table() for e in entries])
    diffs = []
    for e in entries:
        state = "equal" if now.get(e.label) == e.checksum else "DIFFERS"
        say(f"  {e.label:<26} export {e.checksum:<36} target {now.get(e.label)}  {state}")
        if state != "equal":
            diffs.append(e.label)
    return diffs


# --- CLI ---------------------------------------------------------------------------------------------------
def parser() -> UsageParser:
    p = UsageParser(prog=PROG, description="Move SomaBrain's data (Postgres schemas somabrain and somamemory, the "
                    "API's outbox and memory journal) between environments, with a checked manifest.")
    sub = p.add_subparsers(dest="action", required=True, parser_class=UsageParser)
    ex = sub.add_parser("export", help="write a bundle (DIR/manifest.json + data files) from an environment")
    ex.add_argument("--from", dest="env", choices=("dev", "prod"), required=True)
    ex.add_argument("--out", type=Path, required=True, metavar="DIR")
    im = sub.add_parser("import", help="load a bundle into an environment (verified, idempotent, resumable)")
    im.add_argument("--to", dest="env", choices=("dev", "prod"), required=True)
    im.add_argument("--from", dest="bundle", type=Path, required=True, metavar="DIR")
    ve = sub.add_parser("verify", help="compare an environment's tables with a bundle's manifest")
    ve.add_argument("--on", dest="env", choices=("dev", "prod"), required=True)
    ve.add_argument("--from", dest="bundle", type=Path, required=True, metavar="DIR")
    for cmd in (im, ve):
        cmd.add_argument("--expect-sha256", type=sha256_argument, default=None, metavar="HEX",
                         help="refuse the bundle unless DIR/manifest.json has this sha256, the one `migrate export` "
                              "printed: without it the bundle's checksums only show that it agrees with itself")
    for cmd in (ex, im, ve):
        add_target_arguments(cmd)
    return p


def sha256_argument(text: str) -> str:
    """--expect-sha256: 64 hex digits, in either case."""
    if not SHA256.fullmatch(text.lower()):
        raise argparse.ArgumentTypeError(f"not a sha256 (64 hex digits): {text!r}")
    return text.lower()


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    target = build_target(args.env, args)
    try:
        if args.action == "export":
            reachable(target)
            export(target, args.out)
        elif args.action == "import":
            bundle = open_bundle(args.bundle, args.expect_sha256)  # all of it, before the target is touched
            reachable(target)
            import_bundle(target, bundle)
            say("import complete: every table's checksum equals the export's")
        else:
            reachable(target)
            diffs = verify(target, args.bundle, args.expect_sha256)
            if diffs:
                raise OpsError(f"{len(diffs)} table(s) differ from the bundle: {', '.join(diffs)}", EXIT_BROKEN)
            say("every table equals the bundle")
    except OpsError as exc:
        return fail(PROG, exc)
    except ProbeError as exc:
        return fail(PROG, OpsError(str(exc)))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
