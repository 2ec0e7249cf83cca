"""The API end to end in-process: health, remember/recall through SomaMemory and Redis, act, delete, isolation."""

from __future__ import annotations

import random
import string

from quart.typing import TestClientProtocol as Client

from tests.api.helpers import headers
from tests.helpers.metrics import series


async def test_health_has_the_fixed_shape_and_is_ready(client: Client) -> None:
    response = await client.get("/health")
    body = await response.get_json()
    assert response.status_code == 200
    assert body["ok"] is True
    assert body["components"]["memory"]["http"] is True
    assert body["components"]["wm_items"] == "tenant-scoped"
    assert body["predictor_provider"] == "mahal"
    assert body["strict_real"] is True
    assert body["ready"] is True
    for component in ("redis", "postgres", "predictor"):
        assert body["components"][component]["ok"] is True, component


async def test_probes(client: Client) -> None:
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert await ready.get_json() == {"ready": True, "failing": []}


async def test_remember_then_recall_from_both_stores(client: Client, tenant: str) -> None:
    stored = await client.post(
        "/remember",
        json={"content": "The deploy key rotates every Friday", "metadata": {"source": "runbook"}, "importance": 0.9},
        headers=headers(tenant),
    )
    assert stored.status_code == 201, await stored.get_data(as_text=True)
    item_id = (await stored.get_json())["id"]
    await client.post("/remember", json={"content": "Lunch is at noon in the atrium"}, headers=headers(tenant))

    recalled = await client.post(
        "/recall", json={"query": "when does the deploy key rotate?", "top_k": 2}, headers=headers(tenant)
    )
    body = await recalled.get_json()
    assert recalled.status_code == 200
    assert body["wm"][0]["id"] == item_id
    assert body["memory"][0]["id"] == item_id
    assert body["memory"][0]["metadata"] == {"source": "runbook"}
    assert body["memory"][0]["importance"] == 0.9
    assert body["memory"][0]["score"] > body["memory"][1]["score"]


async def test_tenant_cannot_see_or_delete_another_tenants_items(client: Client, tenant: str) -> None:
    stored = await client.post("/remember", json={"content": "tenant A's private note"}, headers=headers(tenant))
    item_id = (await stored.get_json())["id"]
    other = tenant + "-b"
    recalled = await client.post("/recall", json={"query": "private note", "top_k": 10}, headers=headers(other))
    assert await recalled.get_json() == {"wm": [], "memory": []}
    deleted = await client.delete(f"/memory/{item_id}", headers=headers(other))
    assert deleted.status_code == 404
    still = await client.post("/recall", json={"query": "private note"}, headers=headers(tenant))
    assert [i["id"] for i in (await still.get_json())["memory"]] == [item_id]


async def test_delete_removes_from_both_stores(client: Client, tenant: str) -> None:
    stored = await client.post("/remember", json={"content": "ephemeral fact"}, headers=headers(tenant))
    item_id = (await stored.get_json())["id"]
    deleted = await client.delete(f"/memory/{item_id}", headers=headers(tenant))
    assert deleted.status_code == 200
    assert await deleted.get_json() == {"id": item_id, "deleted": True}
    recalled = await client.post("/recall", json={"query": "ephemeral fact"}, headers=headers(tenant))
    assert await recalled.get_json() == {"wm": [], "memory": []}
    assert (await client.delete(f"/memory/{item_id}", headers=headers(tenant))).status_code == 404


async def test_act_learns_and_reports_novelty(client: Client, tenant: str) -> None:
    task = {"task": "summarise the incident report"}
    first = await (await client.post("/act", json=task, headers=headers(tenant))).get_json()
    second = await (await client.post("/act", json=task, headers=headers(tenant))).get_json()
    assert first["provider"] == "mahal"
    assert second["pred_error"] < first["pred_error"]
    assert first["novelty"] == 1.0  # working memory is empty
    await client.post("/remember", json={"content": "summarise the incident report"}, headers=headers(tenant))
    third = await (await client.post("/act", json=task, headers=headers(tenant))).get_json()
    assert third["novelty"] < 0.01
    for body in (first, second, third):
        assert body["salience"] >= max(body["pred_error"], body["novelty"]) - 1e-9


async def test_metrics_count_requests_per_route(client: Client) -> None:
    await client.get("/healthz")
    text = await (await client.get("/metrics")).get_data(as_text=True)
    assert 'somabrain_requests_total{app="api",method="GET",route="/healthz",status="200"}' in text
    assert 'somabrain_dependency_up{app="api",dependency="redis"} 1.0' in text
    assert "somabrain_predictor_seconds_bucket" in text


async def test_request_id_is_echoed_or_made(client: Client, tenant: str) -> None:
    given = await client.post("/recall", json={"query": "x"}, headers={**headers(tenant), "X-Request-ID": "abc-1"})
    assert given.headers["X-Request-ID"] == "abc-1"
    made = await client.get("/healthz")
    assert len(made.headers["X-Request-ID"]) == 32


async def test_random_methods_are_501_and_add_no_metric_series(client: Client, tenant: str) -> None:
    """A client-chosen method must never become a label: each new one would be a new series (in multiprocess
    mode, a new entry in the shared directory), so unknown methods are refused before any metric is touched."""
    rng = random.Random(14)
    await client.get("/metrics")  # a scrape's own series appear from the next scrape on
    before = series(await (await client.get("/metrics")).get_data(as_text=True))
    paths = ["/remember", "/recall", "/health", "/metrics", "/nope", f"/memory/{'a' * 32}"]
    for _ in range(300):
        method = "".join(rng.choices(string.ascii_uppercase + string.ascii_lowercase, k=rng.randint(3, 12)))
        response = await client.open(rng.choice(paths), method=method, headers=headers(tenant))
        assert response.status_code == 501, (method, response.status_code)
        assert await response.get_json() == {
            "error": "method_not_implemented",
            "detail": "the request method is not one this service implements",
        }
    after = series(await (await client.get("/metrics")).get_data(as_text=True))
    assert after == before
