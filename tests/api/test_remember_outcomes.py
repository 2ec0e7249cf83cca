"""/remember when SomaMemory's answer does not come back, on real servers: the API never says "nothing was written"
unless it knows, every memory SomaMemory may hold has an audit event, and a retry with the same idempotency key
converges on one memory.

SomaMemory runs here on a Postgres of this module's own, which the tests lock or stall (tests/helpers/pg_stalls.py);
the API audits to the session's Postgres, which goes on answering.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from quart.typing import TestClientProtocol as Client

from brain.api.app import create_app
from brain.settings import Settings
from localservers.servers import AppServer, PostgresServer, memory_headers, memory_on_own_postgres
from tests.api.helpers import headers
from tests.helpers.pg_stalls import commits_stalled, table_locked

pytestmark = pytest.mark.integration
#: The API gives up on SomaMemory after 5x this (its read timeout), so a held write outlasts it within seconds.
TIMEOUT_S = "1"


@pytest.fixture(scope="module")
def own_memory(run_dir: Path) -> Iterator[tuple[PostgresServer, AppServer]]:
    with memory_on_own_postgres(run_dir) as pair:
        yield pair


@pytest.fixture
def env(strict_env: dict[str, str], own_memory: tuple[PostgresServer, AppServer]) -> dict[str, str]:
    return {**strict_env, "SOMABRAIN_MEMORY_HTTP_ENDPOINT": own_memory[1].url,
            "SOMABRAIN_DEPENDENCY_TIMEOUT": TIMEOUT_S}


@asynccontextmanager
async def _client(env: dict[str, str]) -> AsyncIterator[Client]:
    app = create_app(Settings.from_env(env))
    async with app.test_app() as test_app:
        yield test_app.test_client()


async def _rows(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def _stored(dsn: str, tenant: str) -> list[str]:
    return [r[0] for r in await _rows(dsn, "SELECT id FROM somamemory.memories WHERE tenant = $1", tenant)]


async def _audited(dsn: str, tenant: str) -> list[tuple[str, str]]:
    """(outcome, item_id) of the tenant's remember events, oldest first."""
    return [(r[0], r[1]) for r in await _rows(
        dsn, "SELECT outcome, item_id FROM somabrain.audit_events WHERE tenant = $1 AND action = 'remember' "
        "ORDER BY ts", tenant)]


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(600):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"timed out after 30s waiting for {what}")


def _unknown_id(body: dict[str, str], key: str) -> str:
    """The id an `memory_outcome_unknown` answer names, after checking that it tells the truth and the way out."""
    assert body["error"] == "memory_outcome_unknown", body
    assert "nothing was written" not in body["detail"]
    assert f"Idempotency-Key: {key}" in body["detail"]
    found = re.search(r"under id ([0-9a-f]{32})", body["detail"])
    assert found, body["detail"]
    return found.group(1)


async def test_a_write_held_past_the_timeout_is_unknown_and_a_retry_converges(
    env: dict[str, str], own_memory: tuple[PostgresServer, AppServer], tenant: str
) -> None:
    """A lock holds SomaMemory's INSERT until the API gives up: the API cannot know whether it will commit, so it
    says so (it said "nothing was written") and audits the write as unknown; the same key later stores it once."""
    pg, _ = own_memory
    audit_dsn, key = env["SOMABRAIN_POSTGRES_DSN"], "retry-me-7f3a"
    ask = {"json": {"content": "the boiler was serviced in May"},
           "headers": {**headers(tenant), "Idempotency-Key": key}}
    async with _client(env) as client:
        async with table_locked(pg.dsn, "somamemory.memories"):
            held = await client.post("/remember", **ask)
            assert held.status_code == 503
            item_id = _unknown_id(await held.get_json(), key)
        assert await _audited(audit_dsn, tenant) == [("unknown", item_id)]

        retried = await client.post("/remember", **ask)
        assert retried.status_code == 201, await retried.get_data(as_text=True)
        assert (await retried.get_json())["id"] == item_id
        again = await client.post("/remember", **ask)  # a retry of a write that succeeded: the same answer
        assert again.status_code == 201 and (await again.get_json())["id"] == item_id
    assert await _stored(pg.dsn, tenant) == [item_id]
    # At least once: each answered request has its event, so a memory written by three requests has three.
    assert await _audited(audit_dsn, tenant) == [("unknown", item_id), ("ok", item_id), ("ok", item_id)]


async def test_a_write_committed_after_the_api_gave_up_has_its_audit_event(
    env: dict[str, str], own_memory: tuple[PostgresServer, AppServer], tenant: str
) -> None:
    """SomaMemory's Postgres stalls the commit until the API gives up; the commit then stands. Before, the API said
    "nothing was written" and recorded nothing: a memory with no audit event."""
    pg, _ = own_memory
    audit_dsn = env["SOMABRAIN_POSTGRES_DSN"]
    async with _client(env) as client:
        async with commits_stalled(pg.dsn):
            stalled = await client.post("/remember", json={"content": "the fuse box is behind the coats"},
                                        headers=headers(tenant))
            assert stalled.status_code == 503
            key = stalled.headers["X-Request-ID"]  # no Idempotency-Key sent: the request id is the key
            item_id = _unknown_id(await stalled.get_json(), key)

            async def landed() -> bool:
                return await _stored(pg.dsn, tenant) == [item_id]

            await _until(landed, "the abandoned write to commit")  # committed locally once its wait was cut off
        assert await _audited(audit_dsn, tenant) == [("unknown", item_id)]

        retried = await client.post("/remember", json={"content": "the fuse box is behind the coats"},
                                    headers={**headers(tenant), "Idempotency-Key": key})
        assert retried.status_code == 201, await retried.get_data(as_text=True)
        assert (await retried.get_json())["id"] == item_id
    assert await _stored(pg.dsn, tenant) == [item_id]
    assert await _audited(audit_dsn, tenant) == [("unknown", item_id), ("ok", item_id)]


async def test_an_unknown_outcome_with_the_journal_on_is_queued_and_replayed_once(
    env: dict[str, str], own_memory: tuple[PostgresServer, AppServer], tenant: str, tmp_path: Path
) -> None:
    """SomaMemory optional, journal on: a write whose outcome is unknown is journalled (202). Replay sends the same
    id, so whether or not the first attempt landed, SomaMemory ends with one memory. (The old code journalled it
    too: this guards the choice, it did not fail before.)"""
    pg, _ = own_memory
    journal = tmp_path / "memory-journal"
    env = {**env, "SOMABRAIN_REQUIRE_MEMORY": "0", "SOMABRAIN_MEMORY_QUEUE": "1",
           "SOMABRAIN_JOURNAL_DIR": str(tmp_path)}
    async with _client(env) as client:
        async with table_locked(pg.dsn, "somamemory.memories"):
            queued = await client.post("/remember", json={"content": "the ladder is in the shed"},
                                       headers=headers(tenant))
            assert queued.status_code == 202, await queued.get_data(as_text=True)
            item_id = (await queued.get_json())["id"]
            assert len(list(journal.glob("*.json"))) == 1

        async def replayed() -> bool:
            return not list(journal.glob("*.json"))

        await _until(replayed, "the journal to replay")
    assert await _stored(pg.dsn, tenant) == [item_id]
    assert await _audited(env["SOMABRAIN_POSTGRES_DSN"], tenant) == [("queued", item_id)]


class FaultyRelay:
    """A real TCP relay in front of SomaMemory that breaks one connection on cue, as a dying load balancer or a
    network cut would; everything else passes through untouched.

    - `lose_answer_to(b"POST /remember ")`: the next such request reaches SomaMemory, which does it and answers; the
      relay then closes the API's connection instead of passing the answer on.
    - `cut(b"DELETE /memories/")`: the next such request is not passed on; the API's connection is closed.

    It stands in for faults the real servers cannot be made to produce on cue (a connection lost after, or just
    before, a request was delivered), and it is the only stand-in here: SomaMemory, its Postgres and the API are the
    real ones.
    """

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._lose: bytes | None = None
        self._cut: bytes | None = None
        self.lost = self.cuts = 0
        self._server: asyncio.Server | None = None

    def lose_answer_to(self, request_start: bytes) -> None:
        self._lose = request_start

    def cut(self, request_start: bytes) -> None:
        self._cut = request_start

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        losing = asyncio.Event()  # this connection carries the request whose answer is to be lost

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if self._cut is not None and self._cut in data:
                    self._cut = None
                    self.cuts += 1
                    return
                if self._lose is not None and self._lose in data:
                    self._lose = None
                    losing.set()
                up_w.write(data)
                await up_w.drain()

        async def downstream() -> None:
            while data := await up_r.read(65536):
                if losing.is_set():  # SomaMemory has answered, so the request is done: lose the answer
                    self.lost += 1
                    return
                client_w.write(data)
                await client_w.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        client_w.close()
        up_w.close()


def _port(server: AppServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


async def test_a_lost_answer_is_settled_by_sending_the_write_again(
    strict_env: dict[str, str], memory_server: AppServer, tenant: str
) -> None:
    """SomaMemory stored the memory but its answer was lost with the connection. Before, the API said "nothing was
    written" and left the memory unaudited; now it sends the same write again on a new connection, SomaMemory finds
    that very memory under the id (201), and the request succeeds."""
    relay = FaultyRelay(_port(memory_server))
    dsn = strict_env["SOMABRAIN_POSTGRES_DSN"]
    async with relay as url, _client({**strict_env, "SOMABRAIN_MEMORY_HTTP_ENDPOINT": url}) as client:
        relay.lose_answer_to(b"POST /remember ")
        answer = await client.post("/remember", json={"content": "the water main shuts off by the gate"},
                                   headers=headers(tenant))
        assert relay.lost == 1
        body = await answer.get_json()
    stored, audited = await _stored(dsn, tenant), {item for _, item in await _audited(dsn, tenant)}
    assert len(stored) == 1 and set(stored) <= audited  # whatever the answer: stored once, and never unaudited
    assert answer.status_code == 201, body
    assert await _stored(dsn, tenant) == [body["id"]]
    assert await _audited(dsn, tenant) == [("ok", body["id"])]


async def test_a_write_that_can_be_neither_audited_nor_undone_is_not_called_unwritten(
    strict_env: dict[str, str], memory_server: AppServer, private_postgres: PostgresServer, tenant: str
) -> None:
    """SomaMemory stores the memory, the audit store is down, and the compensating delete does not get through.
    Before, the API answered audit_unavailable, "nothing was written", over a stored, unaudited memory. Now it says
    the write may be stored; once Postgres is back, the same key completes it, audited."""
    relay = FaultyRelay(_port(memory_server))
    memory_dsn, key = strict_env["SOMABRAIN_POSTGRES_DSN"], "order-77-line-3"
    env = {**strict_env, "SOMABRAIN_POSTGRES_DSN": private_postgres.dsn}
    ask = {"json": {"content": "the attic key is on the blue hook"},
           "headers": {**headers(tenant), "Idempotency-Key": key}}
    async with relay as url, _client({**env, "SOMABRAIN_MEMORY_HTTP_ENDPOINT": url}) as client:
        private_postgres.stop()
        relay.cut(b"DELETE /memories/")
        answer = await client.post("/remember", **ask)
        assert relay.cuts == 1
        assert answer.status_code == 503
        body = await answer.get_json()
        item_id = _unknown_id(body, key)
        assert "neither completed" in body["detail"] and "could not audit it either" in body["detail"]
        assert await _stored(memory_dsn, tenant) == [item_id]

        private_postgres.start()
        retried = await client.post("/remember", **ask)
        assert retried.status_code == 201, await retried.get_data(as_text=True)
        assert (await retried.get_json())["id"] == item_id
    assert await _stored(memory_dsn, tenant) == [item_id]
    assert await _audited(private_postgres.dsn, tenant) == [("ok", item_id)]


async def test_a_journalled_write_whose_key_was_reused_does_not_stall_the_journal(
    strict_env: dict[str, str], private_memory: AppServer, memory_server: AppServer, tenant: str, tmp_path: Path
) -> None:
    """A write waits in the journal while SomaMemory is down, and meanwhile its key stores another body (through
    another SomaMemory on the same Postgres). Replay must neither overwrite that memory (it did: writes replaced)
    nor stop at the refusal and hold back the rest of the journal."""
    journal = tmp_path / "memory-journal"
    env = {**strict_env, "SOMABRAIN_MEMORY_HTTP_ENDPOINT": private_memory.url, "SOMABRAIN_REQUIRE_MEMORY": "0",
           "SOMABRAIN_MEMORY_QUEUE": "1", "SOMABRAIN_JOURNAL_DIR": str(tmp_path)}
    async with _client(env) as client:
        private_memory.stop()
        first = await client.post("/remember", json={"content": "the first word"},
                                  headers={**headers(tenant), "Idempotency-Key": "reused"})
        later = await client.post("/remember", json={"content": "a later word"}, headers=headers(tenant))
        assert (first.status_code, later.status_code) == (202, 202)
        item_id, later_id = (await first.get_json())["id"], (await later.get_json())["id"]
        async with httpx.AsyncClient(timeout=30) as http:  # the key's other body, stored first
            stored = await http.post(f"{memory_server.url}/remember", headers=memory_headers(tenant),
                                     json={"id": item_id, "content": "the other word"})
        assert stored.status_code == 201
        private_memory.start()

        async def replayed() -> bool:
            return not list(journal.glob("*.json"))

        await _until(replayed, "the journal to replay past the refused entry")
        found = await client.post("/recall", json={"query": "word", "top_k": 10}, headers=headers(tenant))
        memory = {hit["id"]: hit["content"] for hit in (await found.get_json())["memory"]}
    assert memory == {item_id: "the other word", later_id: "a later word"}


async def test_a_body_somamemory_refuses_is_refused_and_never_journalled(
    strict_env: dict[str, str], narrow_memory: AppServer, tenant: str, tmp_path: Path
) -> None:
    """SomaMemory takes smaller bodies than the API (narrow_memory: 1 KiB). Its 413 was taken for "SomaMemory
    unavailable": the write was journalled and answered 202, and replay then met the same 413 on every round, holding
    back the writes journalled after it. Now the client hears the refusal, and nothing is kept anywhere."""
    env = {**strict_env, "SOMABRAIN_MEMORY_HTTP_ENDPOINT": narrow_memory.url, "SOMABRAIN_REQUIRE_MEMORY": "0",
           "SOMABRAIN_MEMORY_QUEUE": "1", "SOMABRAIN_JOURNAL_DIR": str(tmp_path)}
    async with _client(env) as client:
        refused = await client.post("/remember", json={"content": "x" * 4096}, headers=headers(tenant))
        assert refused.status_code == 413, await refused.get_data(as_text=True)
        answer = await refused.get_json()
        assert answer["error"] == "payload_too_large"
        assert answer["detail"].startswith("SomaMemory refused the write (HTTP 413 payload_too_large)")
        assert answer["detail"].endswith("; nothing was written")
        found = await client.post("/recall", json={"query": "x", "top_k": 10}, headers=headers(tenant))
        assert (await found.get_json())["wm"] == []
    assert list((tmp_path / "memory-journal").glob("*.json")) == []
    assert await _audited(strict_env["SOMABRAIN_POSTGRES_DSN"], tenant) == []
