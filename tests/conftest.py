"""Session-wide real servers: Redis and PostgreSQL start once per test run, on free ports, and stop at the end.

Tests isolate themselves by tenant (a fresh random tenant per test), not by wiping shared state.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.servers import MEMORY_TOKEN, AppServer, PostgresServer, RedisServer


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
