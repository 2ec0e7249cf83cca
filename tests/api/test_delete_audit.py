"""DELETE against real servers when a store fails: nothing is deleted without its audit event, and the 503 says only
what is known. The API gets a Postgres (or a SomaMemory) of its own here, so that the test can stop it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from quart.typing import TestClientProtocol as Client

from brain.api.app import create_app
from brain.settings import Settings
from localservers.servers import AppServer, PostgresServer
from tests.api.helpers import headers

pytestmark = pytest.mark.integration


async def _until(predicate: Callable[[], bool], what: str) -> None:
    """Poll for up to 30 s without blocking the event loop: the in-process app's background tasks share it."""
    for _ in range(600):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"timed out after 30s waiting for {what}")


@asynccontextmanager
async def _client(env: dict[str, str]) -> AsyncIterator[Client]:
    app = create_app(Settings.from_env(env))
    async with app.test_app() as test_app:
        yield test_app.test_client()


async def _remember(client: Client, tenant: str, content: str) -> str:
    stored = await client.post("/remember", json={"content": content}, headers=headers(tenant))
    assert stored.status_code == 201, await stored.get_data(as_text=True)
    item_id: str = (await stored.get_json())["id"]
    return item_id


async def _in_memory(client: Client, tenant: str, query: str) -> set[str]:
    found = await client.post("/recall", json={"query": query, "top_k": 10}, headers=headers(tenant))
    return {hit["id"] for hit in (await found.get_json())["memory"]}


async def _outcomes(dsn: str, tenant: str, item_id: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT outcome FROM somabrain.audit_events WHERE tenant=$1 AND item_id=$2 "
                                "AND action='delete' ORDER BY ts", tenant, item_id)
    finally:
        await conn.close()
    return [r["outcome"] for r in rows]


async def test_delete_with_postgres_down_deletes_nothing(strict_env: dict[str, str], private_postgres: PostgresServer,
                                                         tenant: str) -> None:
    async with _client({**strict_env, "SOMABRAIN_POSTGRES_DSN": private_postgres.dsn}) as client:
        item_id = await _remember(client, tenant, "kept while the audit store is down")
        private_postgres.stop()
        refused = await client.delete(f"/memory/{item_id}", headers=headers(tenant))
        assert refused.status_code == 503
        assert (await refused.get_json())["error"] == "audit_unavailable"
        assert item_id in await _in_memory(client, tenant, "kept while the audit store is down")  # truly unwritten

        private_postgres.start()
        deleted = await client.delete(f"/memory/{item_id}", headers=headers(tenant))
        assert deleted.status_code == 200, await deleted.get_data(as_text=True)
        assert item_id not in await _in_memory(client, tenant, "kept while the audit store is down")
    assert await _outcomes(private_postgres.dsn, tenant, item_id) == ["requested", "ok"]


async def test_delete_interrupted_by_somamemory_says_the_outcome_is_unknown(
    strict_env: dict[str, str], private_memory: AppServer, tenant: str
) -> None:
    async with _client({**strict_env, "SOMABRAIN_MEMORY_HTTP_ENDPOINT": private_memory.url}) as client:
        item_id = await _remember(client, tenant, "deleted while SomaMemory dies")
        private_memory.stop()
        response = await client.delete(f"/memory/{item_id}", headers=headers(tenant))
        body = await response.get_json()
    assert response.status_code == 503
    assert body["error"] == "delete_incomplete"
    assert "nothing was written" not in body["detail"] and "may be partly deleted" in body["detail"]
    assert await _outcomes(strict_env["SOMABRAIN_POSTGRES_DSN"], tenant, item_id) == ["requested"]


async def test_a_journalled_item_deleted_before_replay_stays_deleted(
    strict_env: dict[str, str], private_memory: AppServer, tenant: str, tmp_path: Path
) -> None:
    env = {**strict_env, "SOMABRAIN_MEMORY_HTTP_ENDPOINT": private_memory.url, "SOMABRAIN_REQUIRE_MEMORY": "0",
           "SOMABRAIN_MEMORY_QUEUE": "1", "SOMABRAIN_JOURNAL_DIR": str(tmp_path)}
    async with _client(env) as client:
        private_memory.stop()
        queued = await client.post("/remember", json={"content": "queued then deleted"}, headers=headers(tenant))
        assert queued.status_code == 202
        item_id = (await queued.get_json())["id"]
        deleted = await client.delete(f"/memory/{item_id}", headers=headers(tenant))
        assert deleted.status_code == 503  # SomaMemory is still down, so the delete is not complete yet
        private_memory.start()
        journal = tmp_path / "memory-journal"
        await _until(lambda: not list(journal.glob("*.json")), "the journal to replay")
        assert item_id not in await _in_memory(client, tenant, "queued then deleted")  # not resurrected
