"""The outbox publisher against real brokers: Tansu plain, with SASL, and behind a real TLS front; a private Postgres.

What Tansu 0.6.0 can do is in tests/helpers/secure_kafka.py: TLS only through the front, SASL only the refusal
(no SCRAM login can succeed against this binary), topic replication factor and configs kept and described.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.helpers import create_ssl_context

from brain.audit import store
from brain.audit.events import AuditEvent
from brain.audit.publisher import KafkaUnusable, OutboxPublisher
from brain.db import Database
from brain.settings import KafkaSettings, Settings, kafka_bootstrap
from localservers.servers import AppServer, PostgresServer
from tests.helpers.secure_kafka import KafkaBroker, TlsFiles, make_tls_files

TOPIC = "soma.audit"
PROD = {  # the least a prod API needs to start (auth on asks for these), plus Kafka
    "SOMABRAIN_ENV": "prod",
    "SOMABRAIN_REDIS_URL": "redis://127.0.0.1:6379/0",
    "SOMABRAIN_JWT_PUBLIC_KEY_PATH": "/nonexistent",
    "SOMABRAIN_JWT_ISSUER": "issuer",
    "SOMABRAIN_JWT_AUDIENCE": "somabrain-api",
    "SOMABRAIN_OPA_URL": "http://127.0.0.1:8181",
}


@pytest.fixture
async def db(module_postgres: PostgresServer) -> AsyncIterator[Database]:
    """On a Postgres of this module's own: a publisher drains every row of the outbox, whoever wrote it."""
    database = Database(module_postgres.dsn, store.SCHEMA, store.MIGRATIONS)
    await database.connect()
    async with database.pool.acquire() as conn:
        await conn.execute("DELETE FROM somabrain.outbox")  # what an earlier test left waiting
    yield database
    await database.close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("kafka-tls"))


def _broker(run_dir: Path, **options: Any) -> Iterator[KafkaBroker]:
    broker = KafkaBroker(run_dir, **options)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def plain(run_dir: Path) -> Iterator[KafkaBroker]:
    """Function-scoped: memory storage, so each test starts without topics."""
    yield from _broker(run_dir)


@pytest.fixture(scope="module")
def tls_broker(run_dir: Path, tls: TlsFiles) -> Iterator[KafkaBroker]:
    yield from _broker(run_dir, tls=tls)


@pytest.fixture(scope="module")
def mtls_broker(run_dir: Path, tls: TlsFiles) -> Iterator[KafkaBroker]:
    yield from _broker(run_dir, tls=tls, require_client_cert=True)


@pytest.fixture(scope="module")
def sasl_broker(run_dir: Path) -> Iterator[KafkaBroker]:
    yield from _broker(run_dir, authentication=True)


@pytest.fixture(scope="module")
def sasl_ssl_broker(run_dir: Path, tls: TlsFiles) -> Iterator[KafkaBroker]:
    yield from _broker(run_dir, tls=tls, authentication=True)


async def _queue(db: Database, tenant: str, topic: str = TOPIC) -> AuditEvent:
    event = AuditEvent(tenant=tenant, subject="s", action="act", outcome="ok")
    async with db.pool.acquire() as conn:
        await store.commit(conn, event, topic=topic)
    return event


async def _waiting(db: Database) -> set[str]:
    async with db.pool.acquire() as conn:
        return {r["event_id"] for r in await conn.fetch("SELECT event_id FROM somabrain.outbox")}


def _client_tls(tls: TlsFiles, *, client_cert: bool = False) -> dict[str, Any]:
    """The test's own clients' options: TLS verified against the test CA."""
    context = create_ssl_context(cafile=str(tls.ca))
    if client_cert:
        context.load_cert_chain(str(tls.client_cert), str(tls.client_key))
    return {"security_protocol": "SSL", "ssl_context": context}


async def _consume(bootstrap: str, topic: str, expected: int, **security: Any) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, **security)
    await consumer.start()
    events: dict[str, dict[str, Any]] = {}
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while len(events) < expected and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    event = json.loads(record.value)
                    events[event["dedupe_key"]] = event
    finally:
        await consumer.stop()
    return list(events.values())


async def _topics(bootstrap: str, **security: Any) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **security)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


def _publisher(db: Database, broker: KafkaBroker, kafka: KafkaSettings, topic: str = TOPIC) -> OutboxPublisher:
    return OutboxPublisher(db, broker.bootstrap, topic, kafka=kafka, poll_s=0.05, max_backoff_s=0.2,
                           request_timeout_ms=3000)


async def _eventually(predicate: Callable[[], bool]) -> None:
    """Poll until true; 30 s is a safety net for a loaded 2-core machine, not a timing assertion."""
    async with asyncio.timeout(30):
        while True:  # until predicate() holds, or the timeout fires
            if predicate():
                return
            await asyncio.sleep(0.05)


async def _drain(publisher: OutboxPublisher) -> int:
    try:
        return await publisher.drain_once()
    finally:
        await publisher.stop()


# --- TLS ----------------------------------------------------------------------------------------------------------


async def test_tls_publishes_to_a_broker_whose_certificate_chains_to_the_ca(
    db: Database, tls_broker: KafkaBroker, tls: TlsFiles, tenant: str,
) -> None:
    event = await _queue(db, tenant)
    kafka = KafkaSettings(security_protocol="SSL", ssl_cafile=str(tls.ca))
    assert await _drain(_publisher(db, tls_broker, kafka)) == 1
    assert not await _waiting(db)
    seen = await _consume(tls_broker.bootstrap, TOPIC, 1, **_client_tls(tls))
    assert event.id in {e["dedupe_key"] for e in seen}


async def test_tls_refuses_a_broker_certificate_signed_by_another_ca(
    db: Database, tls_broker: KafkaBroker, tls: TlsFiles, tenant: str,
) -> None:
    event = await _queue(db, tenant)
    kafka = KafkaSettings(security_protocol="SSL", ssl_cafile=str(tls.other_ca))
    with pytest.raises(KafkaUnusable) as info:
        await _drain(_publisher(db, tls_broker, kafka))
    message = str(info.value)
    assert "TLS: the broker's certificate is not trusted" in message
    assert "unable to get local issuer certificate" in message  # OpenSSL's own verdict
    assert str(tls.other_ca) in message  # and which setting to look at
    assert event.id in await _waiting(db)  # nothing published, nothing lost


async def test_plaintext_client_gets_nothing_through_the_tls_listener(
    db: Database, tls_broker: KafkaBroker, tenant: str,
) -> None:
    event = await _queue(db, tenant)
    with pytest.raises(KafkaUnusable, match=r"no Kafka bootstrap server could be used: .* the broker hung up; check "
                                            r"SOMABRAIN_KAFKA_SECURITY_PROTOCOL=PLAINTEXT against its listener"):
        await _drain(_publisher(db, tls_broker, KafkaSettings()))
    assert event.id in await _waiting(db)


async def test_mtls_presents_the_client_certificate_the_broker_requires(
    db: Database, mtls_broker: KafkaBroker, tls: TlsFiles, tenant: str,
) -> None:
    first = await _queue(db, tenant)
    without = KafkaSettings(security_protocol="SSL", ssl_cafile=str(tls.ca))
    with pytest.raises(KafkaUnusable, match=r"no Kafka bootstrap server could be used: .* the broker hung up; check "
                                            r"SOMABRAIN_KAFKA_SECURITY_PROTOCOL=SSL against its listener, and whether "
                                            r"it requires a client certificate \(SOMABRAIN_KAFKA_SSL_CERTFILE\)"):
        await _drain(_publisher(db, mtls_broker, without))
    assert first.id in await _waiting(db)

    with_cert = KafkaSettings(security_protocol="SSL", ssl_cafile=str(tls.ca), ssl_certfile=str(tls.client_cert),
                              ssl_keyfile=str(tls.client_key))
    assert await _drain(_publisher(db, mtls_broker, with_cert)) == 1
    seen = await _consume(mtls_broker.bootstrap, TOPIC, 1, **_client_tls(tls, client_cert=True))
    assert first.id in {e["dedupe_key"] for e in seen}


# --- SASL ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_scram_credentials_the_broker_refuses_are_a_clear_error(
    db: Database, sasl_broker: KafkaBroker, mechanism: str, tmp_path: Path, tenant: str,
) -> None:
    password = tmp_path / "password"
    password.write_text("not-the-password\n")
    event = await _queue(db, tenant)
    kafka = KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism,  # type: ignore[arg-type]
                          sasl_username="audit", sasl_password_file=str(password))
    with pytest.raises(KafkaUnusable) as info:
        await _drain(_publisher(db, sasl_broker, kafka))
    message = str(info.value)
    assert f"SASL {mechanism} authentication as 'audit' failed" in message
    assert f"SOMABRAIN_KAFKA_SASL_PASSWORD_FILE='{password}'" in message
    assert "not-the-password" not in message
    assert event.id in await _waiting(db)


async def test_sasl_refusal_keeps_the_loop_running_and_is_the_health_error(
    db: Database, sasl_broker: KafkaBroker, tenant: str,
) -> None:
    """aiokafka raises KeyError for Tansu's refusal: it must become a health error, not kill the publisher."""
    event = await _queue(db, tenant)
    kafka = KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                          sasl_username="audit", sasl_password="wrong")
    publisher = _publisher(db, sasl_broker, kafka)
    publisher.start()
    try:
        await _eventually(lambda: publisher.last_error is not None)
        await asyncio.sleep(0.5)  # a few more retries
        assert publisher._task is not None and not publisher._task.done()
        health = await publisher.health()
        assert health["ok"] is False
        assert "SASL SCRAM-SHA-256 authentication as 'audit' failed" in health["error"]
        assert health["backlog"] == 1
    finally:
        await publisher.stop()
    assert event.id in await _waiting(db)


async def test_sasl_ssl_authenticates_inside_a_verified_tls_session(
    db: Database, sasl_ssl_broker: KafkaBroker, tls: TlsFiles, tenant: str,
) -> None:
    """TLS verified first (the SASL refusal comes from the broker behind it); with the wrong CA, no SASL at all."""
    await _queue(db, tenant)
    kafka = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="audit",
                          sasl_password="wrong", ssl_cafile=str(tls.ca))
    with pytest.raises(KafkaUnusable, match="SASL SCRAM-SHA-512 authentication as 'audit' failed"):
        await _drain(_publisher(db, sasl_ssl_broker, kafka))
    wrong_ca = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="audit",
                             sasl_password="wrong", ssl_cafile=str(tls.other_ca))
    with pytest.raises(KafkaUnusable) as info:
        await _drain(_publisher(db, sasl_ssl_broker, wrong_ca))
    assert "certificate is not trusted" in str(info.value) and "SASL" not in str(info.value)


# --- the topic ----------------------------------------------------------------------------------------------------


async def test_dev_creates_the_topic_with_the_configured_replication_and_min_insync(
    db: Database, plain: KafkaBroker, tenant: str,
) -> None:
    event = await _queue(db, tenant)
    kafka = KafkaSettings(create_topic=True, topic_partitions=2, topic_replication_factor=3,
                          topic_min_insync_replicas=2)
    assert await _drain(_publisher(db, plain, kafka)) == 1
    admin = AIOKafkaAdminClient(bootstrap_servers=plain.bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([TOPIC])
        [configs] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, TOPIC)])
    finally:
        await admin.close()
    assert described["error_code"] == 0
    assert sorted(p["partition"] for p in described["partitions"]) == [0, 1]
    assert {len(p["replicas"]) for p in described["partitions"]} == {3}
    [resource] = configs.resources
    entries = {entry[0]: entry[1] for entry in resource[4]}  # (name, value, read_only, source, sensitive, ...)
    assert entries["min.insync.replicas"] == "2"
    assert event.id in {e["dedupe_key"] for e in await _consume(plain.bootstrap, TOPIC, 1)}


async def test_prod_does_not_create_the_topic_and_says_who_should(
    db: Database, plain: KafkaBroker, tenant: str,
) -> None:
    kafka = Settings.from_env({**PROD, "SOMABRAIN_KAFKA_URL": plain.url}).kafka
    assert kafka.create_topic is False
    event = await _queue(db, tenant)
    with pytest.raises(KafkaUnusable) as info:
        await _drain(_publisher(db, plain, kafka))
    message = str(info.value)
    assert f"audit topic '{TOPIC}' does not exist" in message
    assert "SOMABRAIN_KAFKA_CREATE_TOPIC=0" in message
    assert "replication factor 3, min.insync.replicas=2" in message  # what to create
    assert TOPIC not in await _topics(plain.bootstrap)  # not even auto-created by asking
    assert event.id in await _waiting(db)

    plain.create_topic(TOPIC)  # the operator's part
    assert await _drain(_publisher(db, plain, kafka)) == 1
    assert event.id in {e["dedupe_key"] for e in await _consume(plain.bootstrap, TOPIC, 1)}


async def test_prod_missing_topic_is_the_health_error_even_with_an_empty_outbox(
    db: Database, plain: KafkaBroker,
) -> None:
    kafka = Settings.from_env({**PROD, "SOMABRAIN_KAFKA_URL": plain.url}).kafka
    publisher = _publisher(db, plain, kafka)
    publisher.start()
    try:
        await _eventually(lambda: publisher.last_error is not None)
        health = await publisher.health()
        assert health["ok"] is False
        assert f"audit topic '{TOPIC}' does not exist" in health["error"]
        assert TOPIC not in await _topics(plain.bootstrap)

        plain.create_topic(TOPIC)  # the operator's part: health recovers with nothing to send
        await _eventually(lambda: publisher.connected and publisher.last_error is None)
        health = await publisher.health()
        assert health["ok"] is True and "error" not in health, health
    finally:
        await publisher.stop()


# --- through the API's environment --------------------------------------------------------------------------------


async def test_api_publishes_over_tls_as_its_environment_says(
    strict_env: dict[str, str], tls_broker: KafkaBroker, tls: TlsFiles, run_dir: Path,
    postgres_server: PostgresServer, tenant: str,
) -> None:
    env = {**strict_env, "SOMABRAIN_KAFKA_URL": tls_broker.url, "SOMABRAIN_KAFKA_SECURITY_PROTOCOL": "SSL",
           "SOMABRAIN_KAFKA_SSL_CAFILE": str(tls.ca), "SOMABRAIN_AUDIT_TOPIC": f"audit-{tenant}",
           "SOMABRAIN_KAFKA_REQUIRED": "1"}
    assert kafka_bootstrap(Settings.from_env(env).kafka_url or "") == tls_broker.bootstrap
    api = AppServer("api", env, run_dir)
    api.start()  # /readyz: Kafka gates readiness here, so the TLS connection is up
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            health = (await client.get("/health")).json()
            assert health["components"]["kafka"]["ok"] is True
            answer = await client.post("/act", json={"task": "hello"}, headers={"X-Tenant-ID": tenant})
            assert answer.status_code == 200, answer.text
            for _ in range(600):  # the group-commit writer, then the publisher: drained within moments
                kafka = (await client.get("/health")).json()["components"]["kafka"]
                if kafka["published"] >= 1 and kafka.get("backlog") == 0:
                    break
                await asyncio.sleep(0.1)
            assert kafka["published"] >= 1 and kafka.get("backlog") == 0, kafka
    finally:
        api.stop()
    seen = await _consume(tls_broker.bootstrap, f"audit-{tenant}", 1, **_client_tls(tls))
    assert any(e["tenant"] == tenant for e in seen)
