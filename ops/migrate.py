"""`somabrain migrate export|import`: move SomaBrain's data between environments (compose -> Kubernetes).

    somabrain migrate export --from dev  --out DIR      [--compose-project P]
    somabrain migrate import --to   prod --from DIR     [--kube-context C]
    somabrain migrate verify --on   prod --from DIR     (compare a live environment with a bundle)

What moves:
- Postgres, schemas `somabrain` (the API: memory_index, audit_events, outbox = the events not yet in Kafka) and
  `somamemory` (SomaMemory's memories): one COPY per table, all in ONE repeatable-read snapshot, run by psql inside
  the postgres workload. `schema_migrations` is compared, not copied: the target's services create the schema.
- The API's memory journal (SOMABRAIN_OUTBOX_DIR/memory-journal/*.json, writes accepted while SomaMemory was down).

The bundle's manifest.json records, per table, the row count, the sha256 of the data file and a content checksum
(see ops.pg.checksum_sql). Import first verifies every file against the manifest and refuses a mismatch; then, per
table, in one transaction: COPY in, recompute the checksum in the target, and COMMIT only when it equals the
manifest's. A table whose target content already equals the export is skipped, so a rerun after an interruption
resumes where it stopped, and a finished import is a no-op. A non-empty target table that differs is refused: import
goes into a fresh environment (start it first, so its services create the schema).
"""

# ruff: noqa: S608  SQL text is built only from identifiers that pass ops.pg.identifier() and checksums that
# match ops.migrate.CHECKSUM (a bundle's manifest is checked before any of it reaches SQL).

from __future__ import annotations

import base64
import hashlib
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

from conformance.targets.base import ProbeError, Target
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
from ops.workload_exec import exec_in

PROG = "somabrain migrate"
FORMAT = "somabrain-migration/1"
MARK = "\\SBMIG"  # COPY text never starts a line with backslash + 'S', so these lines cannot be data
API = "somabrain"
CHECKSUM = re.compile(r"^[0-9]+:[0-9]+$")

JOURNAL_READ = r"""
import base64, json, os, sys
d = os.path.join(os.environ.get("SOMABRAIN_OUTBOX_DIR") or "/var/lib/somabrain/outbox", "memory-journal")
files = sorted(f for f in os.listdir(d) if f.endswith(".json")) if os.path.isdir(d) else []
out = {}
for f in files:
    with open(os.path.join(d, f), "rb") as fh:
        out[f] = base64.b64encode(fh.read()).decode()
sys.stdout.write(json.dumps(out))
"""

# Reads an 8-byte length then that many bytes of JSON {name: base64} from stdin (the exec protocol cannot close
# stdin), writes each missing file atomically, and refuses a same-named file with other content.
JOURNAL_WRITE = r"""
import base64, json, os, struct, sys
n = struct.unpack(">Q", sys.stdin.buffer.read(8))[0]
data = b""
while len(data) < n:
    chunk = sys.stdin.buffer.read(n - len(data))
    if not chunk:
        sys.exit("stdin ended early")
    data += chunk
d = os.path.join(os.environ.get("SOMABRAIN_OUTBOX_DIR") or "/var/lib/somabrain/outbox", "memory-journal")
os.makedirs(d, exist_ok=True)
wrote, kept, clash = [], [], []
for name, b64 in json.loads(data).items():
    body, path = base64.b64decode(b64), os.path.join(d, os.path.basename(name))
    if os.path.exists(path):
        with open(path, "rb") as fh:
            (kept if fh.read() == body else clash).append(name)
        continue
    tmp = os.path.join(d, "." + os.path.basename(name) + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    wrote.append(name)
sys.stdout.write(json.dumps({"wrote": wrote, "kept": kept, "clash": clash}))
"""


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
    tmp = manifest_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, manifest_path)
    say(f"wrote {manifest_path} ({sum(e.rows for e in entries)} rows, {len(journal)} journal files)")
    return manifest


def export_journal(target: Target, out: Path) -> list[dict[str, str]]:
    result = exec_in(target, API, ["python3", "-c", JOURNAL_READ]).check("reading the memory journal")
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
def load_manifest(bundle: Path) -> dict[str, Any]:
    path = bundle / "manifest.json"
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OpsError(f"{path} does not exist: export first (somabrain migrate export --from dev --out "
                       f"{bundle})", EXIT_USAGE) from None
    except ValueError as exc:
        raise OpsError(f"{path} is not JSON: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise OpsError(f"{path}: format {manifest.get('format')!r}, this tool reads {FORMAT}")
    return manifest


def verify_bundle(bundle: Path, manifest: dict[str, Any]) -> list[TableEntry]:
    """Every file exists and has the manifest's sha256 (and the tables their row counts); else refuse."""
    try:
        entries = [TableEntry(**t) for t in manifest["postgres"]["tables"]]
        for e in entries:
            for name in (e.schema, e.table, *e.columns, *e.key):
                pg.identifier(name)
            if not CHECKSUM.fullmatch(e.checksum):
                raise ValueError(f"{e.label}: malformed checksum {e.checksum!r}")
            if Path(e.file).name != e.file.removeprefix("postgres/") or not e.file.startswith("postgres/"):
                raise ValueError(f"{e.label}: file {e.file!r} is outside the bundle's postgres/")
    except (KeyError, TypeError, ValueError) as exc:
        raise OpsError(f"the manifest is malformed, refusing to import: {exc}") from None
    problems = []
    for item in [*(asdict(e) for e in entries), *manifest.get("journal", [])]:
        path = bundle / item["file"]
        if not path.is_file():
            problems.append(f"{item['file']}: missing")
        elif sha256_file(path) != item["sha256"]:
            problems.append(f"{item['file']}: sha256 differs from the manifest")
    for e in entries:
        path = bundle / e.file
        if path.is_file():
            with path.open("rb") as fh:
                lines = sum(1 for _ in fh)
            if lines != e.rows:
                problems.append(f"{e.file}: {lines} rows, the manifest says {e.rows}")
    if problems:
        raise OpsError("the bundle does not match its manifest, refusing to import:\n  " + "\n  ".join(problems))
    return entries


def import_script(entry: TableEntry, data: bytes) -> bytes:
    t = pg.qualified(entry.schema, entry.table)
    cols = ", ".join(f'"{pg.identifier(c)}"' for c in entry.columns)
    setval = (
        "DO $$ DECLARE r record; BEGIN FOR r IN SELECT a.attname, "
        f"pg_get_serial_sequence('{t}', a.attname) AS seq FROM pg_attribute a WHERE a.attrelid = '{t}'::regclass "
        "AND a.attnum > 0 AND NOT a.attisdropped LOOP IF r.seq IS NOT NULL THEN "
        f"EXECUTE format('SELECT setval(%L, GREATEST((SELECT max(%I) FROM {t}), 1))', r.seq, r.attname); "
        "END IF; END LOOP; END $$;"
    )
    if not CHECKSUM.fullmatch(entry.checksum):
        raise OpsError(f"{entry.label}: malformed checksum {entry.checksum!r} in the manifest")
    check = (
        f"DO $$ DECLARE got text; BEGIN {pg.checksum_sql(entry.schema, entry.table)}"
        f" INTO got; IF got IS DISTINCT FROM '{entry.checksum}' THEN RAISE EXCEPTION "
        f"'SBMIG {entry.label}: target checksum % after import, the export says {entry.checksum}', got; "
        "END IF; END $$;"
    )
    head = f"{pg.SESSION}\nBEGIN;\nCOPY {t} ({cols}) FROM STDIN;\n".encode()
    tail = f"\\.\n{setval}\n{check}\nCOMMIT;\n\\q\n".encode()
    return head + data + tail


def import_bundle(target: Target, bundle: Path) -> dict[str, str]:
    manifest = load_manifest(bundle)
    entries = verify_bundle(bundle, manifest)
    say(f"bundle {bundle}: {len(entries)} tables and {len(manifest.get('journal', []))} journal files match the "
        "manifest")
    wanted = manifest["postgres"]["schema_versions"]
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
            script = import_script(e, (bundle / e.file).read_bytes())
            result = pg.psql(target, stdin=script)
            if result.code != 0:
                raise OpsError(f"{e.label}: import refused and rolled back: {result.stderr.strip()[-500:]}")
            outcome[e.label] = "imported"
        say(f"  {e.label:<26} {e.rows:>8} rows  checksum {e.checksum}  {outcome[e.label]}")
    journal = import_journal(target, bundle, manifest.get("journal", []))
    outcome["journal"] = journal
    say(f"  journal: {journal}")
    return outcome


def import_journal(target: Target, bundle: Path, files: list[dict[str, str]]) -> str:
    if not files:
        return "nothing to import"
    payload = json.dumps({Path(f["file"]).name: base64.b64encode((bundle / f["file"]).read_bytes()).decode()
                          for f in files}).encode()
    stdin = struct.pack(">Q", len(payload)) + payload
    result = exec_in(target, API, ["python3", "-c", JOURNAL_WRITE], stdin=stdin).check("writing the journal")
    summary = json.loads(result.stdout)
    if summary["clash"]:
        raise OpsError(f"journal files with the same name but other content in the target: {summary['clash']}")
    return f"{len(summary['wrote'])} written, {len(summary['kept'])} already there"


def verify(target: Target, bundle: Path) -> list[str]:
    """Differences between the environment's tables and the bundle (empty = equal)."""
    manifest = load_manifest(bundle)
    entries = [TableEntry(**t) for t in manifest["postgres"]["tables"]]
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
    for cmd in (ex, im, ve):
        add_target_arguments(cmd)
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    target = build_target(args.env, args)
    try:
        reachable(target)
        if args.action == "export":
            export(target, args.out)
        elif args.action == "import":
            import_bundle(target, args.bundle)
            say("import complete: every table's checksum equals the export's")
        else:
            diffs = verify(target, args.bundle)
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
