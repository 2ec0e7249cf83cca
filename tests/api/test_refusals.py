"""Refusals are cheap and bounded, through real Hypercorn, Postgres, Tansu (Kafka protocol) and the OPA stand-in.

- unauthenticated requests write one aggregate audit row (and one event on `soma.audit`) per (outcome, action),
  with a count, however many are refused;
- a flood from one address is limited before OPA is asked, even when it varies its tenant;
- an authenticated tenant still has its own limit, also ahead of OPA, and is not charged for its neighbours'
  failed tokens from the same address;
- `X-Forwarded-For` names the client only when the peer is a trusted proxy.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from quart.typing import TestClientProtocol as Client

from brain.api.app import create_app
from brain.settings import Settings
from localservers.servers import AppServer, PostgresServer, RedisServer, TansuBroker, wait_for
from tests.api.helpers import auth_env
from tests.helpers import jwt_keys
from tests.helpers.opa_standin import OpaStandin
from tests.helpers.secure_kafka import create_topic

FLOOD = 60


@pytest.fixture
def limits_env(strict_env: dict[str, str], run_dir: Path) -> Iterator[dict[str, str]]:
    """The strict environment with a Redis of this test's own: every client here is 127.0.0.1, one bucket."""
    server = RedisServer(run_dir)
    server.start()
    yield {**strict_env, "SOMABRAIN_REDIS_URL": server.url}
    server.stop()


@pytest.fixture
def kafka(run_dir: Path) -> Iterator[TansuBroker]:
    broker = TansuBroker(run_dir)
    broker.start()
    create_topic(broker.bootstrap, "soma.audit")  # SOMABRAIN_ENV=prod: the service creates no topic, the operator does
    yield broker
    broker.stop()


def bearer(keys: jwt_keys.KeyPair, **claims: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt_keys.mint(keys, jwt_keys.standard_claims(**claims))}"}  # type: ignore[arg-type]


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of the API's /metrics (0 when the series does not exist)."""
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def _refusal_rows(dsn: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tenant, outcome, count FROM somabrain.audit_events "
                                "WHERE action = 'remember' AND outcome IN ('unauthorized', 'rate_limited')")
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def _events(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Everything on `topic` (one partition, as the publisher creates it) up to its end, deduplicated."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    partition = TopicPartition(topic, 0)
    events: dict[str, dict[str, Any]] = {}
    try:
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        while await consumer.position(partition) < end:
            for records in (await consumer.getmany(partition, timeout_ms=500)).values():
                for record in records:
                    event = json.loads(record.value)
                    events[event["dedupe_key"]] = event
    finally:
        await consumer.stop()
    return list(events.values())


def test_unauthenticated_flood_writes_a_bounded_number_of_audit_rows(
    limits_env: dict[str, str], keys: jwt_keys.KeyPair, opa: OpaStandin, run_dir: Path,
    private_postgres: PostgresServer, kafka: TansuBroker,
) -> None:
    env = {**auth_env(limits_env, keys, run_dir, opa.url), "SOMABRAIN_POSTGRES_DSN": private_postgres.dsn,
           "SOMABRAIN_KAFKA_URL": kafka.url, "SOMABRAIN_RATE_LIMIT_ADDRESS_RPS": "0.01",
           "SOMABRAIN_RATE_LIMIT_ADDRESS_BURST": "20",
           # one window for the whole run, however slow the machine: the graceful stop writes it
           "SOMABRAIN_REFUSAL_AUDIT_WINDOW": "3600"}
    api = AppServer("api", env, run_dir)
    api.start()
    try:
        statuses = [httpx.post(f"{api.url}/remember", json={"content": "x"}).status_code for _ in range(FLOOD)]
        assert statuses == [401] * 20 + [429] * (FLOOD - 20)  # the address's budget, then 429 before anything
        assert metric(api.url, "somabrain_refusals_total", reason="unauthenticated") == 20
        assert metric(api.url, "somabrain_refusals_total", reason="rate_limited") == FLOOD - 20
    finally:
        assert api.stop() == 0  # a graceful stop writes the open window
    rows = asyncio.run(_refusal_rows(private_postgres.dsn))
    assert len(rows) == 2, rows  # one per (outcome, action), not one per request
    assert {(r["outcome"], r["count"]) for r in rows} == {("unauthorized", 20), ("rate_limited", FLOOD - 20)}
    assert {r["tenant"] for r in rows} == {"*"}

    again = AppServer("api", env, run_dir)  # its publisher drains what the first process left in the outbox
    again.start()
    try:
        wait_for(lambda: httpx.get(f"{again.url}/health").json()["components"]["kafka"]["backlog"] == 0,
                 "the outbox to drain to Kafka")
    finally:
        again.stop()
    events = [e for e in asyncio.run(_events(kafka.bootstrap, "soma.audit")) if e["action"] == "remember"]
    assert sorted((e["outcome"], e["count"]) for e in events) == [("rate_limited", FLOOD - 20), ("unauthorized", 20)]


def test_a_flood_from_one_address_is_limited_before_opa(limits_env: dict[str, str], run_dir: Path) -> None:
    """Auth off (dev): the tenant header is a claim, so a caller rotating it is still one address."""
    with OpaStandin(log_dir=run_dir) as standin:
        env = {**limits_env, "SOMABRAIN_OPA_URL": standin.url, "SOMABRAIN_POLICY_CACHE_TTL": "0",
               "SOMABRAIN_RATE_LIMIT_ADDRESS_RPS": "0.01", "SOMABRAIN_RATE_LIMIT_ADDRESS_BURST": "5"}
        api = AppServer("api", env, run_dir)
        api.start()
        try:
            asked = standin.data_requests()
            statuses = [httpx.post(f"{api.url}/recall", json={"query": "x"},
                                   headers={"X-Tenant-ID": f"flood-{i}"}).status_code for i in range(FLOOD)]
            assert statuses == [200] * 5 + [429] * (FLOOD - 5)
            assert standin.data_requests() - asked == 5  # the other requests never reached OPA
            assert metric(api.url, "somabrain_refusals_total", reason="rate_limited") == FLOOD - 5
        finally:
            api.stop()


def test_an_authenticated_tenant_keeps_its_own_limit(limits_env: dict[str, str], keys: jwt_keys.KeyPair,
                                                     run_dir: Path, tenant: str) -> None:
    with OpaStandin(log_dir=run_dir) as standin:
        env = {**auth_env(limits_env, keys, run_dir, standin.url), "SOMABRAIN_POLICY_CACHE_TTL": "0",
               "SOMABRAIN_RATE_LIMIT_RPS": "0.01", "SOMABRAIN_RATE_LIMIT_BURST": "3",
               "SOMABRAIN_RATE_LIMIT_ADDRESS_RPS": "0.01", "SOMABRAIN_RATE_LIMIT_ADDRESS_BURST": "2"}
        api = AppServer("api", env, run_dir)
        api.start()
        try:
            bad = [httpx.post(f"{api.url}/recall", json={"query": "x"},
                              headers={"Authorization": "Bearer not.a.jwt"}).status_code for _ in range(4)]
            assert bad == [401, 401, 429, 429]
            asked = standin.data_requests()
            mine = bearer(keys, tenant=tenant, roles=["reader"])
            answers = [httpx.post(f"{api.url}/recall", json={"query": "x"}, headers=mine) for _ in range(4)]
            assert [a.status_code for a in answers] == [200, 200, 200, 429]  # the address's failures cost it nothing
            assert answers[-1].json()["error"] == "rate_limited"
            assert standin.data_requests() - asked == 3  # the limited request was refused before OPA
            other = bearer(keys, tenant=tenant + "-2", roles=["reader"])
            assert httpx.post(f"{api.url}/recall", json={"query": "x"}, headers=other).status_code == 200
        finally:
            api.stop()


@pytest.mark.parametrize(("trusted", "separate"), [("10.0.0.0/8", True), ("", False)])
async def test_forwarded_for_counts_only_behind_a_trusted_proxy(limits_env: dict[str, str], trusted: str,
                                                                separate: bool) -> None:
    """Two clients behind one proxy at 10.1.2.3: their own buckets if the proxy is trusted, else the proxy's."""
    env = {**limits_env, "SOMABRAIN_TRUSTED_PROXIES": trusted, "SOMABRAIN_RATE_LIMIT_ADDRESS_RPS": "0.01",
           "SOMABRAIN_RATE_LIMIT_ADDRESS_BURST": "1"}
    proxy = {"client": ("10.1.2.3", 40000)}
    app = create_app(Settings.from_env(env))
    async with app.test_app() as test_app:
        client: Client = test_app.test_client()
        statuses = []
        for address in ("198.51.100.1", "198.51.100.2"):  # 10.9.9.9, another proxy of ours, is skipped if trusted
            hdrs = {"X-Tenant-ID": "t-xff", "X-Forwarded-For": f"{address}, 10.9.9.9"}
            response = await client.post("/recall", json={"query": "x"}, headers=hdrs, scope_base=proxy)
            statuses.append(response.status_code)
    assert statuses == ([200, 200] if separate else [200, 429])
