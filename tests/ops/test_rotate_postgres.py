"""`somabrain rotate postgres-password` when a step fails: every failure point is undone, or leaves a state that a
rerun of the same command completes, and afterwards the role's real password (a password login to a real
Postgres) is the one the store (Secret somabrain-postgres-app / .env.local's POSTGRES_APP_*) gives the apps.

The database is a Postgres of its own, set up as the postgres image is: its local socket trusted (where rotate's
psql runs, inside the workload), password logins (scram-sha-256) over TCP (how the apps connect). rotate's psql
command runs on this host against it (Target.exec replaced in both targets: kube_fake's exec has no stdin channel,
and compose would need Docker); the SQL is rotate's own. Kubernetes is the PATCH-serving fake of test_rotate_kube,
standing in for the API errors at one precise step that a real cluster cannot be made to produce on demand.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from localservers.servers import PostgresServer
from ops import rotate
from targets import kube_api
from targets.base import ExecResult
from targets.compose import ComposeTarget, EnvFileSecret
from targets.envfile import read_env_file
from targets.kube import KubeTarget
from targets.kube_api import CONFLICT_ATTEMPTS
from tests.ops.fake_cluster import Cluster
from tests.ops.test_rotate_kube import FakePatches, add_secrets, secret_data, serve_patches

USER = "somabrain_app"
SUPERUSER_PASSWORD = "the-superusers-password"  # in .env.local too; never rotated here
CURRENT = "the-current-password"


@pytest.fixture(scope="module")
def database(run_dir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(run_dir)
    (server.data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
    server.start()
    yield server
    server.cleanup()


def socket_env(server: PostgresServer) -> dict[str, str]:
    """What psql sees in the postgres workload: the superuser over the trusted local socket."""
    return {**os.environ, "PGHOST": str(server.dir), "PGPORT": str(server.port), "POSTGRES_USER": "postgres",
            "POSTGRES_DB": "postgres"}


def login(server: PostgresServer, password: str) -> bool:
    """A password login over TCP, as the apps make it."""
    env = {**os.environ, "PGPASSWORD": password}
    proc = subprocess.run(["psql", "-w", "-h", "127.0.0.1", "-p", str(server.port), "-U", USER, "-d", "postgres",
                           "-c", "SELECT 1"], env=env, capture_output=True, timeout=30, check=False)
    return proc.returncode == 0


Exec = Callable[..., ExecResult]


@pytest.fixture
def psql_runs(database: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The role with the current password; rotate's psql run on this host. Append False to make the next psql
    runs fail (one per entry, consumed in order), as an exec into an unreachable pod does."""
    env = socket_env(database)
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", "postgres", "-c",
                    f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{USER}') THEN "
                    f"CREATE ROLE {USER} LOGIN; END IF; END$$; ALTER ROLE {USER} PASSWORD '{CURRENT}'"],
                   env=env, check=True, capture_output=True, timeout=30)
    plan: list[bool] = []

    def exec_in(self: Any, workload: str, argv: Sequence[str], stdin: bytes | None = None,
                sink: Any = None, timeout: float = 600.0) -> ExecResult:
        if plan and not plan.pop(0):
            return ExecResult(1, b"", "error: unable to upgrade connection: pod not ready", "pod postgres-0")
        proc = subprocess.run(list(argv), input=stdin, env=env, capture_output=True, timeout=timeout, check=False)
        return ExecResult(proc.returncode, proc.stdout, proc.stderr.decode(), "pod postgres-0")

    monkeypatch.setattr(KubeTarget, "exec", exec_in)
    monkeypatch.setattr(ComposeTarget, "exec", exec_in)
    return plan


@pytest.fixture
def patches(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> FakePatches:
    add_secrets(cluster.fake)
    secret = cluster.fake.find("Secret", cluster.fake.namespace, "somabrain-postgres-app")
    secret.pop("stringData", None)
    secret["data"] = {**secret_data(cluster, "somabrain-postgres-app"),
                      "POSTGRES_USER": base64.b64encode(USER.encode()).decode(),
                      "POSTGRES_PASSWORD": base64.b64encode(CURRENT.encode()).decode()}
    monkeypatch.setattr(rotate, "readiness_failures", lambda target: [])  # the writes are what is tested here
    return serve_patches(cluster.fake)


def stored(cluster: Cluster) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret_data(cluster, "somabrain-postgres-app").items()}


def assert_agree(server: PostgresServer, values: dict[str, str], other: str) -> None:
    """The role opens with the stored password and not with `other`; no pending password is left."""
    assert rotate.PENDING not in values
    assert login(server, values["POSTGRES_PASSWORD"]) and not login(server, other)


def prod(cluster: Cluster) -> list[str]:
    return ["postgres-password", "--env", "prod", *cluster.args()]


def fail_secret_writes(monkeypatch: pytest.MonkeyPatch, patches: FakePatches, first: int, count: int = 1) -> None:
    """From write `first` (counted from 1) of Secret somabrain-postgres-app, `count` writes meet 409 on every attempt
    and give up."""
    real = kube_api.merge_patch
    seen = [0]

    def merge_patch(target: Any, path: str, changes: dict[str, Any]) -> dict[str, Any]:
        if path.endswith("/secrets/somabrain-postgres-app"):
            seen[0] += 1
            if seen[0] == first:
                patches.conflicts["secrets/somabrain-postgres-app"] = CONFLICT_ATTEMPTS * count
        return real(target, path, changes)

    monkeypatch.setattr(kube_api, "merge_patch", merge_patch)  # what KubeSecret.write calls


# --- prod: Secret somabrain-postgres-app ----------------------------------------------------------------
def test_prod_stage_fails_nothing_changes_and_a_rerun_completes(
        cluster: Cluster, patches: FakePatches, psql_runs: list[bool], database: PostgresServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Fake: the Secret write of step 1 meets 409 on every attempt."""
    patches.conflicts["secrets/somabrain-postgres-app"] = 1000
    assert rotate.main(prod(cluster)) == 2
    err = capsys.readouterr().err
    assert f"could not store the new password as {rotate.PENDING}" in err and "next: somabrain rotate" in err
    assert stored(cluster)["POSTGRES_PASSWORD"] == CURRENT
    assert_agree(database, stored(cluster), "no-such-password")

    patches.conflicts.clear()
    assert rotate.main(prod(cluster)) == 0, capsys.readouterr()
    assert_agree(database, stored(cluster), CURRENT)


def test_prod_alter_role_fails_it_is_undone(
        cluster: Cluster, patches: FakePatches, psql_runs: list[bool], database: PostgresServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Fake: stands in for the API server, whose Secret writes succeed; the exec of ALTER ROLE fails once."""
    psql_runs.append(False)
    assert rotate.main(prod(cluster)) == 2
    err = capsys.readouterr().err
    assert f"ALTER ROLE {USER} failed" in err and "undone: the role and Secret somabrain-postgres-app" in err
    assert stored(cluster)["POSTGRES_PASSWORD"] == CURRENT
    assert_agree(database, stored(cluster), "no-such-password")


def test_prod_alter_role_and_its_undo_fail_a_rerun_completes(
        cluster: Cluster, patches: FakePatches, psql_runs: list[bool], database: PostgresServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Fake: as above, and the undo's ALTER ROLE fails too: the new password stays pending, the rerun uses it."""
    psql_runs.extend([False, False])
    assert rotate.main(prod(cluster)) == 2
    err = capsys.readouterr().err
    assert "undo stopped" in err and f"it finds {rotate.PENDING} and completes" in err
    pending = stored(cluster)[rotate.PENDING]
    assert login(database, CURRENT)  # the apps still connect

    assert rotate.main(prod(cluster)) == 0, capsys.readouterr()
    assert "completing it" in capsys.readouterr().out
    assert stored(cluster)["POSTGRES_PASSWORD"] == pending
    assert_agree(database, stored(cluster), CURRENT)


def test_prod_promote_fails_the_role_is_put_back(
        cluster: Cluster, patches: FakePatches, psql_runs: list[bool], database: PostgresServer,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Fake: the write of step 3 (PENDING -> POSTGRES_PASSWORD) meets 409 on every attempt, after the role has
    the new password: the role goes back to the stored one, and the pending key is dropped."""
    fail_secret_writes(monkeypatch, patches, 2)
    assert rotate.main(prod(cluster)) == 2
    err = capsys.readouterr().err
    assert "could not make the new password current" in err and "undone: the role and Secret" in err
    assert stored(cluster)["POSTGRES_PASSWORD"] == CURRENT
    assert_agree(database, stored(cluster), "no-such-password")


def test_prod_promote_and_dropping_pending_fail_a_rerun_completes(
        cluster: Cluster, patches: FakePatches, psql_runs: list[bool], database: PostgresServer,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Fake: the write of step 3 and the undo's write both meet 409 on every attempt: the role is back on the
    stored password (the apps connect), the pending one is left, and the rerun completes with it."""
    fail_secret_writes(monkeypatch, patches, 2, count=2)
    assert rotate.main(prod(cluster)) == 2
    err = capsys.readouterr().err
    assert "undo stopped" in err and f"it finds {rotate.PENDING} and completes" in err
    pending = stored(cluster)[rotate.PENDING]
    assert stored(cluster)["POSTGRES_PASSWORD"] == CURRENT and login(database, CURRENT)

    assert rotate.main(prod(cluster)) == 0, capsys.readouterr()
    assert stored(cluster)["POSTGRES_PASSWORD"] == pending
    assert_agree(database, stored(cluster), CURRENT)


def test_prod_rollout_fails_the_old_password_is_back_in_both(
        cluster: Cluster, patches: FakePatches, psql_runs: list[bool], database: PostgresServer,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Fake: the restart of deployment/somabrain meets 409 on every attempt (somamemory rolls)."""
    patches.conflicts["deployments/somabrain"] = CONFLICT_ATTEMPTS
    assert rotate.main(prod(cluster)) == 2
    err = capsys.readouterr().err
    assert "the apps are not ready with the new password" in err
    assert f"restart of deployment/somabrain: gave up after {CONFLICT_ATTEMPTS} attempts" in err
    assert "the old password is back on the role and in Secret somabrain-postgres-app, the apps rolled back" in err
    assert stored(cluster)["POSTGRES_PASSWORD"] == CURRENT
    assert_agree(database, stored(cluster), "no-such-password")
    assert all(method == "PATCH" for method, _, _ in patches.writes())


# --- dev: .env.local --------------------------------------------------------------------------------------
@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / ".env.local"
    path.write_text(f"# dev credentials\nCOMPOSE_PROJECT_NAME=sbtest\nPOSTGRES_USER=somabrain\n"
                    f"POSTGRES_PASSWORD={SUPERUSER_PASSWORD}\nPOSTGRES_DB=somabrain\nPOSTGRES_APP_USER={USER}\n"
                    f"POSTGRES_APP_PASSWORD={CURRENT}\n")
    return path


def dev_rotate(env_file: Path) -> int:
    """rotate_postgres as main runs it for --env dev, without the reachability check (no Docker here)."""
    target = ComposeTarget("sbtest", env_file=env_file)
    try:
        return rotate.rotate_postgres(target, rotate.PasswordStore.of(target), 30, "somabrain rotate again")
    except rotate.OpsError as exc:
        print(exc)
        return exc.code


@pytest.mark.parametrize("failing", ["stage", "alter-role", "promote", "rollout"])
def test_dev_each_failure_leaves_the_env_file_and_the_role_agreeing_and_a_rerun_completes(
        failing: str, env_file: Path, psql_runs: list[bool], database: PostgresServer,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The compose side of each failure point: the env file write of step 1 or 3 fails (a full disk), ALTER ROLE
    fails, or `docker compose up` does (its first run only; the roll back then works)."""
    real_write, rolls = EnvFileSecret.write, [["`docker compose -p sbtest ... up` failed: unhealthy"]]

    def write(self: EnvFileSecret, changes: dict[str, str | None]) -> None:
        pending = rotate.PENDING  # the Secret's names, which the store maps to the env file's
        if (failing == "stage" and pending in changes) or (failing == "promote" and "POSTGRES_PASSWORD"
                                                            in changes and changes[pending] is None):
            raise OSError(28, "No space left on device")
        real_write(self, changes)

    monkeypatch.setattr(EnvFileSecret, "write", write)
    monkeypatch.setattr(ComposeTarget, "roll", lambda self, workloads, timeout:
                        rolls.pop() if failing == "rollout" and rolls else [])
    monkeypatch.setattr(rotate, "readiness_failures", lambda target: [])  # no stack here: the writes are tested
    if failing == "alter-role":
        psql_runs.append(False)

    assert dev_rotate(env_file) == 2
    values = read_env_file(env_file)
    assert values["POSTGRES_APP_PASSWORD"] == CURRENT and values["COMPOSE_PROJECT_NAME"] == "sbtest"
    assert values["POSTGRES_PASSWORD"] == SUPERUSER_PASSWORD and "POSTGRES_APP_PASSWORD_PENDING" not in values
    assert_agree(database, {"POSTGRES_PASSWORD": values["POSTGRES_APP_PASSWORD"]}, "no-such-password")
    assert "next: somabrain rotate again" in capsys.readouterr().out

    monkeypatch.setattr(EnvFileSecret, "write", real_write)
    assert dev_rotate(env_file) == 0
    values = read_env_file(env_file)
    assert values["POSTGRES_PASSWORD"] == SUPERUSER_PASSWORD and "POSTGRES_APP_PASSWORD_PENDING" not in values
    assert_agree(database, {"POSTGRES_PASSWORD": values["POSTGRES_APP_PASSWORD"]}, CURRENT)
    assert env_file.read_text().startswith("# dev credentials\n")
