"""SomaMemory's /remember on real servers: a caller-chosen id is written once and never replaced, and a 503 says
"nothing was written" only when that is so."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from localservers.servers import AppServer, PostgresServer, memory_headers, memory_on_own_postgres
from tests.helpers.pg_stalls import commits_stalled, wait_event_pids

pytestmark = pytest.mark.integration


@pytest.fixture
def own_memory(run_dir: Path) -> Iterator[tuple[PostgresServer, AppServer]]:
    """SomaMemory on a Postgres of the test's own: the test stalls that server's commits."""
    with memory_on_own_postgres(run_dir) as pair:
        yield pair


def test_the_same_id_with_another_memory_is_refused(memory_server: AppServer, tenant: str) -> None:
    url, hdrs, item_id = memory_server.url, memory_headers(tenant), uuid.uuid4().hex
    first = {"id": item_id, "content": "the spare key is under the mat", "metadata": {"room": "hall"}}
    assert httpx.post(f"{url}/remember", json=first, headers=hdrs).status_code == 201
    assert httpx.post(f"{url}/remember", json=first, headers=hdrs).json() == {"id": item_id}  # a retry: 201 again
    for changed in ({**first, "content": "the spare key is in the car"}, {**first, "metadata": {}},
                    {**first, "importance": 0.9}):
        refused = httpx.post(f"{url}/remember", json=changed, headers=hdrs)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "idempotency_conflict"
    found = httpx.post(f"{url}/recall", json={"query": "spare key"}, headers=hdrs).json()["results"]
    assert [(r["id"], r["content"], r["metadata"]) for r in found] == [
        (item_id, "the spare key is under the mat", {"room": "hall"})]


async def test_a_commit_cut_off_by_a_shutdown_is_not_called_unwritten(
    own_memory: tuple[PostgresServer, AppServer], tenant: str
) -> None:
    """The backend writing the memory is terminated while its commit waits for a standby: the commit stands, so
    SomaMemory must not say "nothing was written" (it did: 503 storage_unavailable)."""
    pg, memory = own_memory
    item_id = uuid.uuid4().hex
    async with commits_stalled(pg.dsn) as admin, httpx.AsyncClient(timeout=60) as http:
        sent = asyncio.create_task(http.post(f"{memory.url}/remember", headers=memory_headers(tenant),
                                             json={"id": item_id, "content": "written as the server went down"}))
        for pid in await wait_event_pids(admin, "SyncRep"):
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
        answer = await sent
        for _ in range(100):  # the terminated backend ends its commit on the way out
            stored = await admin.fetchval("SELECT count(*) FROM somamemory.memories WHERE tenant = $1 AND id = $2",
                                          tenant, item_id)
            if stored:
                break
            await asyncio.sleep(0.05)
    assert stored == 1  # committed locally before the wait was cut short
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "storage_outcome_unknown"
    assert "nothing was written" not in answer.json()["detail"]
    # The same write again settles it: the memory is there, once.
    async with httpx.AsyncClient(timeout=30) as http:
        again = await http.post(f"{memory.url}/remember", headers=memory_headers(tenant),
                                json={"id": item_id, "content": "written as the server went down"})
    assert again.status_code == 201, again.text
    conn = await asyncpg.connect(pg.dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM somamemory.memories WHERE tenant = $1", tenant) == 1
    finally:
        await conn.close()
