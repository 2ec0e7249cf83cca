"""/remember is idempotent by its key (Idempotency-Key, else X-Request-ID), on this session's real servers: the same
key stores one memory whatever the number of requests, another body under the key is refused, and a bad key is a
400 that writes nothing."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from quart.typing import TestClientProtocol as Client

from tests.api.helpers import headers

pytestmark = pytest.mark.integration


async def _count(dsn: str, sql: str, *args: Any) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        found: int = await conn.fetchval(sql, *args)
        return found
    finally:
        await conn.close()


async def _remember(client: Client, tenant: str, content: str, **extra: str) -> tuple[int, dict[str, Any]]:
    response = await client.post("/remember", json={"content": content}, headers={**headers(tenant), **extra})
    return response.status_code, await response.get_json()


async def test_the_same_key_stores_one_memory(client: Client, strict_env: dict[str, str], tenant: str) -> None:
    dsn = strict_env["SOMABRAIN_POSTGRES_DSN"]
    answers = [await _remember(client, tenant, "the spare tyre is in the boot", **{"Idempotency-Key": key})
               for key in ("order-1234", "order-1234", '"order-1234"')]  # the quoted form is the same key
    assert [status for status, _ in answers] == [201, 201, 201]
    assert len({body["id"] for _, body in answers}) == 1
    item_id = answers[0][1]["id"]
    assert answers[-1][1]["wm_items"] == 1  # working memory holds it once too
    assert await _count(dsn, "SELECT count(*) FROM somamemory.memories WHERE tenant = $1", tenant) == 1
    found = await client.post("/recall", json={"query": "spare tyre"}, headers=headers(tenant))
    assert [hit["id"] for hit in (await found.get_json())["memory"]] == [item_id]


async def test_another_body_under_a_used_key_is_refused(client: Client, strict_env: dict[str, str],
                                                        tenant: str) -> None:
    dsn = strict_env["SOMABRAIN_POSTGRES_DSN"]
    status, first = await _remember(client, tenant, "the meeting is on Tuesday", **{"Idempotency-Key": "k-1"})
    assert status == 201
    status, refused = await _remember(client, tenant, "the meeting is on Friday", **{"Idempotency-Key": "k-1"})
    assert status == 409
    assert refused["error"] == "idempotency_conflict" and "nothing was written" in refused["detail"]
    found = await client.post("/recall", json={"query": "meeting"}, headers=headers(tenant))
    recalled = await found.get_json()
    assert [(h["id"], h["content"]) for h in recalled["memory"]] == [(first["id"], "the meeting is on Tuesday")]
    assert [(h["id"], h["content"]) for h in recalled["wm"]] == [(first["id"], "the meeting is on Tuesday")]
    audited = await _count(dsn, "SELECT count(*) FROM somabrain.audit_events WHERE tenant = $1 "
                                "AND action = 'remember'", tenant)
    assert audited == 1  # the refusal changed nothing, so it has no event


async def test_the_request_id_is_the_key_when_there_is_no_idempotency_key(client: Client, tenant: str) -> None:
    same = [await _remember(client, tenant, "the cat is fed at six", **{"X-Request-ID": "req-42"}) for _ in range(2)]
    assert [s for s, _ in same] == [201, 201] and same[0][1]["id"] == same[1][1]["id"]
    status, keyed = await _remember(client, tenant, "the cat is fed at six", **{"Idempotency-Key": "req-42"})
    assert status == 201 and keyed["id"] == same[0][1]["id"]  # one key space: a 503 names the request id as the key
    fresh = [await _remember(client, tenant, f"a new memory {i}") for i in range(2)]  # no key at all: new each time
    assert fresh[0][1]["id"] != fresh[1][1]["id"]


async def test_a_key_names_a_memory_of_its_own_tenant_only(client: Client, tenant: str) -> None:
    mine = await _remember(client, tenant, "shared words", **{"Idempotency-Key": "same-key"})
    theirs = await _remember(client, tenant + "-b", "shared words", **{"Idempotency-Key": "same-key"})
    assert mine[0] == theirs[0] == 201 and mine[1]["id"] != theirs[1]["id"]


@pytest.mark.parametrize("key", ["", "a b", "x" * 129, '"unbalanced', "a,b", "tab\there", "semi;colon", '""'])
async def test_a_bad_key_is_400_and_writes_nothing(client: Client, strict_env: dict[str, str], tenant: str,
                                                   key: str) -> None:
    status, body = await _remember(client, tenant, "never stored", **{"Idempotency-Key": key})
    assert status == 400, body
    assert body["error"] == "invalid_idempotency_key"
    dsn = strict_env["SOMABRAIN_POSTGRES_DSN"]
    assert await _count(dsn, "SELECT count(*) FROM somamemory.memories WHERE tenant = $1", tenant) == 0
    recalled = await client.post("/recall", json={"query": "never stored"}, headers=headers(tenant))
    assert (await recalled.get_json())["wm"] == []


async def test_two_key_headers_are_400(client: Client, tenant: str) -> None:
    response = await client.post("/remember", json={"content": "x"},
                                 headers=[("X-Tenant-ID", tenant), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")])
    assert response.status_code == 400
    assert (await response.get_json())["error"] == "invalid_idempotency_key"
