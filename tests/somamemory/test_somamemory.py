"""SomaMemory as a real Hypercorn process on real Postgres: durable across restarts, validated, tenant-scoped."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from localservers.servers import AppServer, PostgresServer, http_status, memory_headers, wait_for


def test_memories_survive_a_restart(private_memory: AppServer, tenant: str) -> None:
    memory = private_memory
    item_id = uuid.uuid4().hex
    hdrs = memory_headers(tenant)
    stored = httpx.post(f"{memory.url}/remember", json={"id": item_id, "content": "the vault code is in the safe"},
                        headers=hdrs)
    assert stored.status_code == 201
    assert stored.json() == {"id": item_id}
    assert memory.stop() == 0  # SIGTERM: graceful, exit 0
    memory.start()
    index = httpx.get(f"{memory.url}/health").json()["components"]["recall_index"]
    assert index["ok"] and index["vectors"] >= 1  # ready means rebuilt from Postgres
    found = httpx.post(f"{memory.url}/recall", json={"query": "where is the vault code"}, headers=hdrs).json()
    assert [r["id"] for r in found["results"]] == [item_id]
    assert 0 < found["results"][0]["score"] <= 1


def test_retried_id_is_idempotent(memory_server: AppServer, tenant: str) -> None:
    item_id = uuid.uuid4().hex
    hdrs = memory_headers(tenant)
    for _ in range(2):
        assert httpx.post(f"{memory_server.url}/remember", json={"id": item_id, "content": "same"},
                          headers=hdrs).status_code == 201
    found = httpx.post(f"{memory_server.url}/recall", json={"query": "same"}, headers=hdrs).json()
    assert len(found["results"]) == 1


def test_validation_and_isolation(memory_server: AppServer, tenant: str) -> None:
    url, hdrs = memory_server.url, memory_headers(tenant)
    assert httpx.post(f"{url}/remember", content=b"{oops", headers=hdrs).status_code == 400
    assert httpx.post(f"{url}/remember", json={"content": 1}, headers=hdrs).status_code == 422
    assert httpx.post(f"{url}/remember", json={"content": "x", "id": "not-hex"}, headers=hdrs).status_code == 422
    assert httpx.post(f"{url}/remember", json={"content": "x"}, headers=memory_headers()).status_code == 400
    stored = httpx.post(f"{url}/remember", json={"content": "mine only"}, headers=hdrs).json()
    other = memory_headers(tenant + "-x")
    assert httpx.post(f"{url}/recall", json={"query": "mine only"}, headers=other).json() == {"results": []}
    assert httpx.delete(f"{url}/memories/{stored['id']}", headers=other).status_code == 404
    assert httpx.delete(f"{url}/memories/{stored['id']}", headers=hdrs).status_code == 200


def test_postgres_down_is_503_not_500(tmp_path: Path, run_dir: Path, tenant: str) -> None:
    pg = PostgresServer(run_dir)
    pg.start()
    server = AppServer("memory", {"SOMABRAIN_POSTGRES_DSN": pg.dsn, "SOMABRAIN_HEALTH_INTERVAL": "0.2"}, run_dir)
    server.start()
    try:
        pg.stop()
        response = httpx.post(f"{server.url}/remember", json={"content": "during the outage"},
                              headers=memory_headers(tenant))
        assert response.status_code == 503
        assert response.json()["error"] == "storage_unavailable"
        pg.start()
        wait_for(lambda: http_status(server.url + "/readyz") == 200, "SomaMemory ready again after Postgres returns")
        assert httpx.post(f"{server.url}/remember", json={"content": "after the outage"},
                          headers=memory_headers(tenant)).status_code == 201
    finally:
        server.stop()
        pg.cleanup()


def test_two_instances_see_each_others_writes_and_deletes(postgres_server: PostgresServer, run_dir: Path,
                                                          memory_server: AppServer, tenant: str) -> None:
    """Two SomaMemory processes (two workers each) over one Postgres: whichever answers, it answers the same."""
    other = AppServer("memory", {"SOMABRAIN_POSTGRES_DSN": postgres_server.dsn}, run_dir, "--workers", "2")
    other.start()
    try:
        one, two, hdrs = memory_server.url, other.url, memory_headers(tenant)

        def recall(url: str, query: str) -> list[str]:
            found = httpx.post(f"{url}/recall", json={"query": query}, headers=hdrs)
            assert found.status_code == 200
            return [r["id"] for r in found.json()["results"]]

        item = httpx.post(f"{one}/remember", json={"content": "the boat leaves at dawn"}, headers=hdrs).json()["id"]
        assert [recall(two, "boat dawn") for _ in range(4)] == [[item]] * 4  # new connections: either worker
        assert httpx.delete(f"{two}/memories/{item}", headers=hdrs).status_code == 200
        assert recall(one, "boat dawn") == []
    finally:
        other.stop()


def test_a_stored_vector_it_cannot_index_is_reported_not_ready(run_dir: Path, tenant: str) -> None:
    """A vector of another dimension (SOMABRAIN_EMBED_DIM changed under existing data) stops the warm-up: /health
    names the cause and the instance stays unready, rather than serving recall without that tenant."""
    pg = PostgresServer(run_dir)
    pg.start()
    env = {"SOMABRAIN_POSTGRES_DSN": pg.dsn, "SOMABRAIN_HEALTH_INTERVAL": "0.2"}
    server = AppServer("memory", {**env, "SOMABRAIN_EMBED_DIM": "128"}, run_dir)
    try:
        server.start()
        assert httpx.post(f"{server.url}/remember", json={"content": "short vectors"},
                          headers=memory_headers(tenant)).status_code == 201
        server.stop()
        server = AppServer("memory", env, run_dir)
        server.start(ready=False)
        wait_for(lambda: "error" in httpx.get(f"{server.url}/health").json()["components"]["recall_index"],
                 "the warm-up failure in /health")
        index = httpx.get(f"{server.url}/health").json()["components"]["recall_index"]
        assert not index["ok"] and "256 dimensions" in index["error"]
        assert http_status(f"{server.url}/readyz") == 503
    finally:
        server.stop()
        pg.cleanup()
