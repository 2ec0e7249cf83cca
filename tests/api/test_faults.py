"""Faults while requests flow, each on a private stack of real servers (Redis, Postgres, Tansu, SomaMemory, API).

- the Kafka broker dies: writes are still accepted, events wait in the outbox, and every one reaches the broker
  once it is back (counted by a real consumer);
- Postgres restarts: requests fail cleanly with 503 during the outage, then recover; no acknowledged write is lost;
- SomaMemory dies (journal allowed): writes are queued (202), readiness goes false, then the journal replays;
- Redis dies: readiness goes false, the rate limiter fails in the configured direction, /act answers 503 and
  serves again once Redis is back;
- a tenant over its rate gets 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from localservers.servers import AppServer, PostgresServer, RedisServer, TansuBroker, http_status, wait_for


@dataclass
class Stack:
    run_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    redis: RedisServer | None = None
    pg: PostgresServer | None = None
    kafka: TansuBroker | None = None
    memory: AppServer | None = None
    api: AppServer | None = None

    def up(self, *, kafka: bool = False, **overrides: str) -> Stack:
        self.redis, self.pg = RedisServer(self.run_dir), PostgresServer(self.run_dir)
        self.redis.start()
        self.pg.start()
        self.memory = AppServer("memory", {"SOMABRAIN_POSTGRES_DSN": self.pg.dsn,
                                           "SOMABRAIN_HEALTH_INTERVAL": "0.2"}, self.run_dir)
        self.memory.start()
        self.env = {
            "SOMABRAIN_STRICT_REAL": "1",
            "SOMABRAIN_REDIS_URL": self.redis.url,
            "SOMABRAIN_POSTGRES_DSN": self.pg.dsn,
            "SOMABRAIN_MEMORY_HTTP_ENDPOINT": self.memory.url,
            "SOMABRAIN_REQUIRE_MEMORY": "1",
            "SOMABRAIN_HEALTH_INTERVAL": "0.2",
            "SOMABRAIN_DEPENDENCY_TIMEOUT": "2",
        }
        if kafka:
            self.kafka = TansuBroker(self.run_dir)
            self.kafka.start()
            self.env["SOMABRAIN_KAFKA_URL"] = self.kafka.url
        self.env.update(overrides)
        self.api = AppServer("api", self.env, self.run_dir)
        self.api.start()
        return self

    @property
    def url(self) -> str:
        assert self.api is not None
        return self.api.url

    def health(self) -> dict[str, object]:
        return httpx.get(self.url + "/health", timeout=10).json()  # type: ignore[no-any-return]

    def remember(self, tenant: str, content: str) -> httpx.Response:
        return httpx.post(self.url + "/remember", json={"content": content}, headers={"X-Tenant-ID": tenant},
                          timeout=30)

    def act(self, tenant: str) -> httpx.Response:
        return httpx.post(self.url + "/act", json={"task": "water the plants"}, headers={"X-Tenant-ID": tenant},
                          timeout=30)

    def down(self) -> None:
        for server in (self.api, self.memory, self.kafka):
            if server is not None:
                server.stop()
        if self.pg is not None:
            self.pg.cleanup()
        if self.redis is not None:
            self.redis.stop()


@pytest.fixture
def stack(run_dir: Path) -> Iterator[Stack]:
    s = Stack(run_dir)
    yield s
    s.down()


def _backlog(stack: Stack) -> int:
    kafka = stack.health()["components"]["kafka"]  # type: ignore[index]
    return int(kafka.get("backlog", -1))  # type: ignore[union-attr]


async def _consume(bootstrap: str, topic: str, expected: int, within_s: float = 60) -> list[dict[str, object]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    events: dict[str, dict[str, object]] = {}
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while len(events) < expected and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    event = json.loads(record.value)
                    events[event["dedupe_key"]] = event  # at-least-once: drop repeats by the dedupe key
    finally:
        await consumer.stop()
    return list(events.values())


def test_broker_outage_loses_no_event(stack: Stack, tenant: str) -> None:
    stack.up(kafka=True)
    assert stack.kafka is not None
    before = [stack.remember(tenant, f"before the outage {i}") for i in range(10)]
    assert all(r.status_code == 201 for r in before)
    wait_for(lambda: _backlog(stack) == 0, "the outbox to drain to Kafka")
    seen = asyncio.run(_consume(stack.kafka.bootstrap, "soma.audit", 10))
    assert sorted(e["item_id"] for e in seen) == sorted(r.json()["id"] for r in before)  # type: ignore[type-var]

    stack.kafka.stop()  # SIGKILL: the broker is gone, and with it (memory storage) everything it held
    during = [stack.remember(tenant, f"during the outage {i}") for i in range(15)]
    assert all(r.status_code == 201 for r in during), [r.text for r in during if r.status_code != 201]
    wait_for(lambda: stack.health()["components"]["kafka"]["ok"] is False, "kafka reported degraded")  # type: ignore[index]
    assert _backlog(stack) == 15  # accumulated, nothing dropped
    assert stack.health()["ready"] is True  # Kafka is not required for readiness unless KAFKA_REQUIRED=1

    stack.kafka.start()
    wait_for(lambda: _backlog(stack) == 0, "the outbox to drain after the broker returned", timeout=60)
    flushed = asyncio.run(_consume(stack.kafka.bootstrap, "soma.audit", 15))
    produced = {r.json()["id"] for r in during}
    consumed = {e["item_id"] for e in flushed if e["action"] == "remember"}
    print(f"broker outage: produced {len(produced)} events while down, consumed {len(consumed)} after restart")
    assert consumed == produced
    assert all(e["schema_version"] == 1 and e["tenant"] == tenant and e["outcome"] == "ok" for e in flushed)


def test_postgres_restart_fails_cleanly_and_loses_no_acknowledged_write(stack: Stack, tenant: str) -> None:
    stack.up()
    assert stack.pg is not None
    acked: list[str] = []
    statuses: list[int] = []

    def send(n: int, label: str) -> None:
        for i in range(n):
            r = stack.remember(tenant, f"{label} {i} {uuid.uuid4().hex[:6]}")
            statuses.append(r.status_code)
            assert r.status_code in (201, 503), r.text
            if r.status_code == 201:
                acked.append(r.json()["id"])

    send(5, "before")
    stack.pg.stop()
    send(5, "during")
    assert statuses[5:] == [503] * 5  # clean refusals, never a 500
    stack.pg.start()
    wait_for(lambda: http_status(stack.url + "/readyz") == 200, "ready again after Postgres returned", timeout=60)
    send(5, "after")
    assert statuses[-5:] == [201] * 5

    async def stored() -> tuple[set[str], set[str]]:
        assert stack.pg is not None
        conn = await asyncpg.connect(stack.pg.dsn)
        try:
            memories = {r["id"] for r in await conn.fetch("SELECT id FROM somamemory.memories WHERE tenant=$1",
                                                          tenant)}
            audited = {r["item_id"] for r in await conn.fetch(
                "SELECT item_id FROM somabrain.audit_events WHERE tenant=$1 AND action='remember'", tenant)}
        finally:
            await conn.close()
        return memories, audited

    memories, audited = asyncio.run(stored())
    assert len(acked) == 10
    assert set(acked) <= memories  # every acknowledged write is durable
    assert set(acked) == audited  # and audited exactly once per acknowledged write


def test_somamemory_outage_queues_then_replays(stack: Stack, tenant: str, tmp_path: Path) -> None:
    stack.up(SOMABRAIN_REQUIRE_MEMORY="0", SOMABRAIN_MEMORY_QUEUE="1", SOMABRAIN_JOURNAL_DIR=str(tmp_path))
    assert stack.memory is not None
    stack.memory.stop()
    wait_for(lambda: stack.health()["ready"] is False, "ready:false with SomaMemory down")
    assert stack.health()["components"]["memory"]["http"] is False  # type: ignore[index]
    queued = [stack.remember(tenant, f"written while SomaMemory is down {i}") for i in range(4)]
    assert all(r.status_code == 202 and r.json()["queued"] is True for r in queued)
    journal = list((tmp_path / "memory-journal").glob("*.json"))
    assert len(journal) == 4  # durably on disk before the 202
    stack.memory.start()
    wait_for(lambda: stack.health()["ready"] is True, "ready:true after SomaMemory returned")
    wait_for(lambda: not list((tmp_path / "memory-journal").glob("*.json")), "the journal to replay")
    found = httpx.post(stack.url + "/recall", json={"query": "written while SomaMemory is down", "top_k": 10},
                       headers={"X-Tenant-ID": tenant}).json()
    assert {i["id"] for i in found["memory"]} == {r.json()["id"] for r in queued}


def test_somamemory_required_means_503(stack: Stack, tenant: str) -> None:
    stack.up()
    assert stack.memory is not None
    stack.memory.stop()
    refused = stack.remember(tenant, "no journal when SomaMemory is required")
    assert refused.status_code == 503
    assert refused.json()["error"] == "memory_unavailable"


@pytest.mark.parametrize(("fail_open", "error", "act_error"), [
    ("0", "rate_limiter_unavailable", "rate_limiter_unavailable"),
    ("1", "working_memory_unavailable", "predictor_unavailable"),
])
def test_redis_down(stack: Stack, tenant: str, fail_open: str, error: str, act_error: str) -> None:
    """/act's round trips have a pool of their own (brain.roundtrip.RoundTrips): its connections, several of them
    open when Redis goes, must answer 503 while it is away and serve again once it is back."""
    stack.up(SOMABRAIN_RATE_LIMIT_FAIL_OPEN=fail_open)
    assert stack.redis is not None
    with ThreadPoolExecutor(8) as pool:  # several concurrent /act: several connections in the pool
        assert {r.status_code for r in pool.map(lambda _: stack.act(tenant), range(16))} == {200}
    stack.redis.stop()
    wait_for(lambda: stack.health()["ready"] is False, "ready:false with Redis down")
    response = stack.remember(tenant, "x")
    assert response.status_code == 503
    assert response.json()["error"] == error  # fail-closed stops at the limiter; fail-open reaches Redis
    acted = stack.act(tenant)
    assert (acted.status_code, acted.json()["error"]) == (503, act_error)
    stack.redis.start()
    wait_for(lambda: stack.health()["ready"] is True, "ready:true after Redis returned")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: stack.act(tenant), range(16)))
        assert [r.status_code for r in answers] == [200] * 16, [r.text for r in answers if r.status_code != 200]


def test_rate_limit_429(stack: Stack, tenant: str) -> None:
    stack.up(SOMABRAIN_RATE_LIMIT_RPS="0.5", SOMABRAIN_RATE_LIMIT_BURST="3")
    answers = [httpx.post(stack.url + "/recall", json={"query": "x"}, headers={"X-Tenant-ID": tenant})
               for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert int(answers[-1].headers["Retry-After"]) >= 1
    assert answers[-1].json()["error"] == "rate_limited"
    other = httpx.post(stack.url + "/recall", json={"query": "x"}, headers={"X-Tenant-ID": tenant + "-2"})
    assert other.status_code == 200  # buckets are per tenant


def test_a_failed_queued_write_leaves_no_journal_file(stack: Stack, tenant: str, tmp_path: Path) -> None:
    """SomaMemory down (journalled) and then Postgres down (cannot audit): 503, and nothing is left to replay."""
    stack.up(SOMABRAIN_REQUIRE_MEMORY="0", SOMABRAIN_MEMORY_QUEUE="1", SOMABRAIN_JOURNAL_DIR=str(tmp_path))
    assert stack.memory is not None and stack.pg is not None
    stack.memory.stop()
    stack.pg.stop()
    response = stack.remember(tenant, "journalled, then refused")
    assert response.status_code == 503
    assert response.json()["error"] == "audit_unavailable"
    assert not list((tmp_path / "memory-journal").glob("*.json"))
