"""The API app in-process (Quart's test client), wired to this session's real Redis, Postgres and SomaMemory; this
run's signing keys and the OPA stand-in. Plain helpers (a tenant's headers, the production settings): helpers.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from quart.typing import TestClientProtocol as Client

from brain.api.app import create_app
from brain.settings import Settings
from tests.helpers import jwt_keys
from tests.helpers.opa_standin import OpaStandin


@pytest.fixture(scope="session")
async def client(strict_env: dict[str, str]) -> AsyncIterator[Client]:
    app = create_app(Settings.from_env(strict_env))
    async with app.test_app() as test_app:
        yield test_app.test_client()


@pytest.fixture(scope="session")
def keys() -> jwt_keys.KeyPair:
    """A signing key pair made for this run (never committed)."""
    return jwt_keys.generate_rsa_keys()


@pytest.fixture(scope="session")
def opa(run_dir: Path) -> Iterator[OpaStandin]:
    """The OPA Data API stand-in (regorus) loading the real k8s/policy/somabrain.rego."""
    standin = OpaStandin(log_dir=run_dir)
    standin.start()
    yield standin
    standin.stop()
