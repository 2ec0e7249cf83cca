"""A tenant at its SomaMemory quota gets a clear 403 from the API, and nothing of the refused write stays anywhere:
not in working memory, not in the journal (replaying it would meet the same refusal). Real Redis, Postgres and a
SomaMemory process with a quota of 3 memories; the API in-process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from brain.api.app import create_app
from brain.settings import Settings
from localservers.servers import AppServer, PostgresServer
from tests.api.helpers import headers

pytestmark = pytest.mark.integration
QUOTA = 3


@pytest.fixture(scope="module")
def quota_memory(postgres_server: PostgresServer, run_dir: Path) -> Iterator[AppServer]:
    server = AppServer("memory", {"SOMABRAIN_POSTGRES_DSN": postgres_server.dsn,
                                  "SOMABRAIN_MEMORY_QUOTA_ITEMS": str(QUOTA)}, run_dir)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("journal", [False, True], ids=["memory-required", "journal-on"])
async def test_a_full_tenant_gets_403_and_nothing_is_kept(strict_env: dict[str, str], quota_memory: AppServer,
                                                           tenant: str, tmp_path: Path, journal: bool) -> None:
    env = {**strict_env, "SOMABRAIN_MEMORY_HTTP_ENDPOINT": quota_memory.url}
    if journal:
        env |= {"SOMABRAIN_REQUIRE_MEMORY": "0", "SOMABRAIN_MEMORY_QUEUE": "1", "SOMABRAIN_JOURNAL_DIR": str(tmp_path)}
    app = create_app(Settings.from_env(env))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for i in range(QUOTA):
            stored = await client.post("/remember", json={"content": f"kept {i}"}, headers=headers(tenant))
            assert stored.status_code == 201, await stored.get_data(as_text=True)
        refused = await client.post("/remember", json={"content": "the refused one"}, headers=headers(tenant))
        body = await refused.get_json()
        assert refused.status_code == 403 and body["error"] == "quota_exceeded", body
        assert f"quota of {QUOTA} memories" in body["detail"] and "nothing was written" in body["detail"]
        found = await client.post("/recall", json={"query": "the refused one", "top_k": 10}, headers=headers(tenant))
        everything = await found.get_json()
        assert "the refused one" not in {hit["content"] for hit in everything["wm"] + everything["memory"]}
    # Nothing journalled (os.walk: a few stat calls once the app has stopped).
    assert not [name for _, _, names in os.walk(tmp_path) for name in names if name.endswith(".json")]
