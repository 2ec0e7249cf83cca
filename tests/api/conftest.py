"""The API app in-process (Quart's test client), wired to this session's real Redis, Postgres and SomaMemory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

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


def headers(tenant: str) -> dict[str, Any]:
    return {"X-Tenant-ID": tenant}


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


def auth_env(strict_env: dict[str, str], keys: jwt_keys.KeyPair, run_dir: Path, opa_url: str) -> dict[str, str]:
    """The production settings: strict, auth on with this run's public key, OPA fail-closed."""
    key_path = run_dir / "jwt_pub.pem"
    keys.write_public_pem(key_path)
    return {
        **strict_env,
        "SOMABRAIN_DISABLE_AUTH": "0",
        "SOMABRAIN_ENV": "prod",
        "SOMABRAIN_JWT_PUBLIC_KEY_PATH": str(key_path),
        "SOMABRAIN_JWT_ISSUER": jwt_keys.ISSUER,
        "SOMABRAIN_JWT_AUDIENCE": jwt_keys.AUDIENCE,
        "SOMABRAIN_OPA_URL": opa_url,
    }
