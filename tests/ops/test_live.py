"""Live tests of the operator tools on Docker (marked `live`: `make live` runs them after `stack.sh up`).

- doctor --env dev on the live stack (project from .env.local): a clean report, exit 0;
- migrate: export from the live stack, import into a second, fresh compose project `sbmig-target` (started here
  from the same images on other host ports, and taken down here; the live stack is only read), then equal row
  counts and checksums, a no-op rerun, a resumed import, and refusals of a tampered bundle and a conflicting row;
- doctor on a deliberately broken variant: SomaMemory of `sbmig-target` stopped.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops import doctor, migrate, pg, rotate
from ops.common import REPO
from targets.compose import ComposeTarget
from targets.envfile import compose_project, read_env_file

pytestmark = pytest.mark.live
TARGET_PROJECT = "sbmig-target"
COMPOSE = ["docker", "compose", "-p", TARGET_PROJECT]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live_project() -> str:
    return compose_project(None)


@pytest.fixture(scope="module")
def target_env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sbmig") / "target.env"


@pytest.fixture(scope="module")
def target_project(target_env_file: Path) -> Iterator[str]:
    """A fresh compose project from the same images, other host ports; only this project is ever taken down."""
    env = read_env_file(REPO / ".env.local")
    env = {k: (str(free_port()) if k.endswith("_HOST_PORT") else v) for k, v in env.items()}
    env["COMPOSE_PROJECT_NAME"] = TARGET_PROJECT
    env["POSTGRES_PASSWORD"] = uuid.uuid4().hex
    env["POSTGRES_APP_PASSWORD"] = uuid.uuid4().hex
    env_file = target_env_file
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()), encoding="utf-8")
    files = ["--env-file", str(env_file), "-f", str(REPO / "compose/docker-compose.yml"),
             "-f", str(REPO / "compose/docker-compose.airgap.yml")]
    subprocess.run([*COMPOSE, *files, "down", "-v"], capture_output=True, timeout=180, check=False)
    up = subprocess.run([*COMPOSE, *files, "up", "-d", "--no-build", "--wait"], capture_output=True, text=True,
                        timeout=400, check=False)
    assert up.returncode == 0, up.stderr[-2000:]
    try:
        yield TARGET_PROJECT
    finally:
        subprocess.run([*COMPOSE, *files, "down", "-v"], capture_output=True, timeout=180, check=False)


def remember(port: int, tenant: str, content: str) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/remember", method="POST",
                                     data=json.dumps({"content": content}).encode(),
                                     headers={"Content-Type": "application/json", "X-Tenant-ID": tenant})
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - http to 127.0.0.1
        assert answer.status == 201


def test_doctor_live_stack_is_clean(live_project: str, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code = doctor.main(["--env", "dev", "--compose-project", live_project])
    out = capsys.readouterr().out
    print(out, f"doctor took {time.monotonic() - started:.2f} s")
    assert code == 0, out
    assert "\nFAIL " not in out and "\nWARN " not in out and "healthy: 9 OK, 0 WARN, 0 FAIL" in out


def test_migration_round_trip(live_project: str, target_project: str, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    live_port = int(read_env_file(REPO / ".env.local")["SOMABRAIN_HOST_PORT"])
    tenant = "mig-" + uuid.uuid4().hex[:8]
    for text in ("migrate the brain to kubernetes", "checksums must match"):
        remember(live_port, tenant, text)
    bundle = tmp_path / "bundle"
    assert migrate.main(["export", "--from", "dev", "--compose-project", live_project, "--out", str(bundle)]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    tables = {t["schema"] + "." + t["table"]: t for t in manifest["postgres"]["tables"]}
    assert set(tables) == {"somabrain.audit_events", "somabrain.memory_index", "somabrain.outbox",
                           "somamemory.memories", "somamemory.tenant_changes", "somamemory.tombstones"}
    assert tables["somamemory.memories"]["rows"] >= 2
    assert tenant.encode() in (bundle / tables["somamemory.memories"]["file"]).read_bytes()

    assert migrate.main(["import", "--to", "dev", "--compose-project", target_project, "--from", str(bundle)]) == 0
    target = ComposeTarget(target_project)
    entries = [migrate.TableEntry(**t) for t in manifest["postgres"]["tables"]]
    after = pg.checksums(target, [e.as_table() for e in entries])
    assert after == {e.label: e.checksum for e in entries}
    print("\n".join(f"{e.label}: {e.rows} rows, checksum {e.checksum}" for e in entries))

    # idempotent: a second run changes nothing
    capsys.readouterr()
    assert migrate.main(["import", "--to", "dev", "--compose-project", target_project, "--from", str(bundle)]) == 0
    assert capsys.readouterr().out.count("already imported") == len(entries)

    # resumable: a table lost (or never reached) is imported again, the others are skipped
    pg.query(target, "TRUNCATE somamemory.memories")
    assert migrate.main(["import", "--to", "dev", "--compose-project", target_project, "--from", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert out.count("already imported") == len(entries) - 1 and "imported\n" in out
    assert pg.checksums(target, [e.as_table() for e in entries]) == after

    # a conflicting row in the target: refused, and the transaction leaves the table as it was
    pg.query(target, "UPDATE somabrain.audit_events SET outcome = 'tampered' WHERE id = "
                     "(SELECT min(id) FROM somabrain.audit_events)")
    changed = pg.checksums(target, [e.as_table() for e in entries])["somabrain.audit_events"]
    assert migrate.main(["import", "--to", "dev", "--compose-project", target_project, "--from", str(bundle)]) == 2
    assert "differ from the export" in capsys.readouterr().err
    assert pg.checksums(target, [e.as_table() for e in entries])["somabrain.audit_events"] == changed

    # a tampered bundle: refused before anything is written
    data = bundle / tables["somamemory.memories"]["file"]
    data.write_bytes(data.read_bytes().replace(b"checksums", b"checksumz", 1))
    assert migrate.main(["import", "--to", "dev", "--compose-project", target_project, "--from", str(bundle)]) == 2
    assert "sha256 differs from the manifest" in capsys.readouterr().err


def login(project: str, user: str, password: str) -> bool:
    """A password login over the compose network (the container trusts its socket and loopback, not this)."""
    proc = subprocess.run(["docker", "exec", "-e", f"PGPASSWORD={password}", f"{project}-sb_postgres-1",
                           "psql", "-h", "sb_postgres", "-U", user, "-d", "somabrain", "-c", "SELECT 1"],
                          capture_output=True, timeout=30, check=False)
    return proc.returncode == 0


def test_rotate_postgres_password_dev(target_project: str, target_env_file: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    before = read_env_file(target_env_file)
    user, old = before["POSTGRES_APP_USER"], before["POSTGRES_APP_PASSWORD"]  # the apps' runtime role
    assert login(target_project, user, old)
    code = rotate.main(["postgres-password", "--env", "dev", "--compose-project", target_project,
                        "--env-file", str(target_env_file), "--timeout", "240"])
    out = capsys.readouterr().out
    print(out)
    assert code == 0, out
    after = read_env_file(target_env_file)
    new = after["POSTGRES_APP_PASSWORD"]
    assert new != old and len(new) >= 32 and after["POSTGRES_PASSWORD"] == before["POSTGRES_PASSWORD"]
    assert login(target_project, user, new) and not login(target_project, user, old)
    assert doctor.main(["--env", "dev", "--compose-project", target_project]) == 0, capsys.readouterr().out


def test_doctor_names_a_stopped_memory_service(target_project: str, capsys: pytest.CaptureFixture[str]) -> None:
    container = f"{target_project}-somamemory-1"
    subprocess.run(["docker", "stop", "-t", "5", container], capture_output=True, timeout=60, check=True)
    try:
        code = doctor.main(["--env", "dev", "--compose-project", target_project])
        out = capsys.readouterr().out
        print(out)
        assert code == 2, out
        assert "FAIL dns        somamemory does not resolve from somabrain" in out
        assert f"FAIL services   {container} is exited" in out
        assert f"next: docker start {container}" in out
        assert "FAIL memory     GET http://somamemory:9595/health from somabrain" in out
        assert f"next: docker compose -p {target_project} logs --tail 50 somamemory" in out
    finally:
        subprocess.run(["docker", "start", container], capture_output=True, timeout=60, check=False)
