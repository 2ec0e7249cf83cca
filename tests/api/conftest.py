"""The API app in-process (Quart's test client), wired to this session's real Redis, Postgres and SomaMemory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from quart.typing import TestClientProtocol as Client

from brain.api.app import create_app
from brain.settings import Settings


@pytest.fixture(scope="session")
async def client(strict_env: dict[str, str]) -> AsyncIterator[Client]:
    app = create_app(Settings.from_env(strict_env))
    async with app.test_app() as test_app:
        yield test_app.test_client()


def headers(tenant: str) -> dict[str, Any]:
    return {"X-Tenant-ID": tenant}
