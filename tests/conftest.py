"""Session-wide real servers: Redis and PostgreSQL start once per test run, on free ports, and stop at the end.

Tests isolate themselves by tenant (a fresh random tenant per test), not by wiping shared state.

Two tiers need more than this machine, and say so with a marker (registered in pyproject.toml, whose addopts leave
both out unless asked for by name):
- `live`: a Docker engine and what `make up` provides (the compose stack, its images). A module marks itself
  (`pytestmark = pytest.mark.live`), or single tests in a mixed module. `make live` runs `pytest -m live`.
- `cluster`: the local Kubernetes cluster; every test under tests/cluster/ (its conftest marks them).
  `make cluster-test` runs `pytest -m cluster`.
Selected, a tier's tests fail when what they need is missing (a live test without a Docker engine fails before its
fixtures run); never selected, they are reported as left out, with the command that runs them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from localservers.servers import MEMORY_TOKEN, AppServer, PostgresServer, RedisServer

TIERS = {
    "live": "they need Docker and the running compose stack: `make live` (pytest -m live) runs them",
    "cluster": "they need the local cluster: `make cluster-test` (pytest -m cluster) runs them",
}
_left_out = pytest.StashKey[Counter[str]]()
_docker_problem = pytest.StashKey[str]()


def pytest_deselected(items: list[pytest.Item]) -> None:
    for item in items:
        left_out = item.config.stash.setdefault(_left_out, Counter())
        left_out.update(tier for tier in TIERS if item.get_closest_marker(tier) is not None)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    left_out = config.stash.get(_left_out, Counter())
    for tier, why in TIERS.items():
        if left_out[tier]:
            terminalreporter.write_line(f"{left_out[tier]} {tier} tests not selected: {why}", yellow=True)


def docker_problem() -> str:
    """Why no Docker engine can be used from here, or "" when `docker info` answers."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH (`make up` installs and starts Docker)"
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine answers (`docker info`: {last}); `make up` or scripts/docker_engine.sh ensure"
    return ""


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("live") is None:
        return
    if _docker_problem not in item.config.stash:
        item.config.stash[_docker_problem] = docker_problem()
    if problem := item.config.stash[_docker_problem]:
        pytest.fail(f"live test without its Docker engine: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def run_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="somabrain-tests-"))
    os.chmod(path, 0o755)
    yield path


@pytest.fixture(scope="session")
def redis_server(run_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(run_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server(run_dir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(run_dir)
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def memory_server(postgres_server: PostgresServer, run_dir: Path) -> Iterator[AppServer]:
    """SomaMemory as a real Hypercorn process against the real Postgres."""
    server = AppServer("memory", {"SOMABRAIN_POSTGRES_DSN": postgres_server.dsn}, run_dir)
    server.start()
    yield server
    server.stop()


def _own_postgres(run_dir: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(run_dir)
    server.start()
    yield server
    server.cleanup()


@pytest.fixture
def private_postgres(run_dir: Path) -> Iterator[PostgresServer]:
    """A Postgres of the test's own, for tests that stop it or count every row it holds."""
    yield from _own_postgres(run_dir)


@pytest.fixture(scope="module")
def module_postgres(run_dir: Path) -> Iterator[PostgresServer]:
    """A Postgres of the test module's own, for modules that fill it or make databases in it."""
    yield from _own_postgres(run_dir)


@pytest.fixture
def private_memory(postgres_server: PostgresServer, run_dir: Path) -> Iterator[AppServer]:
    """A SomaMemory process of the test's own (the session's is shared), for tests that stop or restart it."""
    server = AppServer("memory", {"SOMABRAIN_POSTGRES_DSN": postgres_server.dsn}, run_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def narrow_memory(postgres_server: PostgresServer, run_dir: Path) -> Iterator[AppServer]:
    """A SomaMemory of the test's own that takes bodies of at most 1 KiB (SOMABRAIN_MAX_BODY_BYTES's floor, far below
    the API's 2 MiB): one that refuses (413) writes the API accepts, as when the two are deployed with different
    limits."""
    server = AppServer("memory", {"SOMABRAIN_POSTGRES_DSN": postgres_server.dsn, "SOMABRAIN_MAX_BODY_BYTES": "1024"},
                       run_dir)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def strict_env(redis_server: RedisServer, postgres_server: PostgresServer, memory_server: AppServer) -> dict[str, str]:
    """The strict-real environment the compose stack uses, pointed at this session's servers (auth off, no OPA)."""
    return {
        "SOMABRAIN_STRICT_REAL": "1",
        "SOMABRAIN_REQUIRE_MEMORY": "1",
        "SOMABRAIN_PREDICTOR_PROVIDER": "mahal",
        "SOMABRAIN_REDIS_URL": redis_server.url,
        "SOMABRAIN_POSTGRES_DSN": postgres_server.dsn,
        "SOMABRAIN_MEMORY_HTTP_ENDPOINT": memory_server.url,
        "SOMABRAIN_MEMORY_TOKEN": MEMORY_TOKEN,
        "SOMABRAIN_HEALTH_INTERVAL": "0.2",
        # Generous: a loaded 2-core CI machine must not turn a slow answer into "down" mid-test.
        "SOMABRAIN_DEPENDENCY_TIMEOUT": "5",
    }


@pytest.fixture
def tenant() -> str:
    return "t-" + uuid.uuid4().hex[:12]
