"""Drain the Postgres outbox to Kafka, at least once.

One loop: take the oldest rows (`FOR UPDATE SKIP LOCKED`, so several replicas can drain side by side), send them
with acks=all, and delete them in the same transaction only after the broker acknowledged every one. A failure
rolls back and leaves the rows for the next try, after an exponential backoff. While the broker is down events
accumulate in the outbox; nothing is dropped. Message key = tenant (ordering per tenant), header `dedupe_key` = the
event id, which is also in the payload.

aiokafka's idempotent producer does not work against every Kafka-protocol broker (Tansu, in tests); acks=all
without idempotence plus the dedupe key gives the same guarantee to consumers that drop repeats.

How to reach the broker is `KafkaSettings` (brain.settings): PLAINTEXT, SSL (the broker's certificate verified
against `SOMABRAIN_KAFKA_SSL_CAFILE`, optionally a client certificate), SASL_PLAINTEXT or SASL_SSL (SCRAM-SHA-256/512
or PLAIN). The options are built anew for every connection, so a rotated password file or certificate is read at the
next reconnect. aiokafka reports a failed bootstrap only as "Unable to bootstrap"; the publisher then asks each
server once more and puts the reason (certificate not trusted, credentials refused, connection refused) into the
health error.

The topic: before the first send to a topic on a connection, the publisher asks the broker whether it exists,
without letting the broker auto-create it. A missing topic is created with the configured partitions, replication
factor and min.insync.replicas when `create_topic` is on (the dev default); otherwise (the prod default: the
operator owns the topic) it is an error naming the topic and the variable, the events stay in the outbox, and the
next try finds the topic once the operator has created it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
    UnsupportedSaslMechanismError,
    for_code,
)
from aiokafka.protocol.metadata import MetadataRequest

from brain import metrics, tasks
from brain.audit.store import SCHEMA
from brain.db import DB_ERRORS, Database
from brain.errors import ConfigError
from brain.settings import PREFIX, KafkaSettings

log = logging.getLogger(__name__)

BATCH = 200
_SASL_ERRORS = (SaslAuthenticationFailed, UnsupportedSaslMechanismError, IllegalSaslStateError)


class KafkaUnusable(Exception):
    """The publisher cannot publish through this broker as configured: TLS not verified, credentials refused, no
    server reachable, the topic missing or not creatable. The message says which, and what to change."""


class OutboxPublisher:
    def __init__(self, db: Database, bootstrap: str, topic: str, *, kafka: KafkaSettings | None = None,
                 poll_s: float = 0.2, max_backoff_s: float = 5.0, request_timeout_ms: int = 5000) -> None:
        self._db = db
        self._bootstrap = bootstrap
        self._topic = topic
        self._kafka = kafka if kafka is not None else KafkaSettings()
        self._security: dict[str, Any] = {}
        self._ready_topics: set[str] = set()
        self._poll_s = poll_s
        self._max_backoff_s = max_backoff_s
        self._request_timeout_ms = request_timeout_ms
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.published = 0
        self.last_error: str | None = None
        self.last_success = 0.0
        self.connected = False

    def start(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._loop(), name="outbox-publisher")

    def notify(self) -> None:
        """Wake the loop now (an event was just committed) instead of at the next poll."""
        self._wake.set()

    async def stop(self) -> None:
        await tasks.cancel(self._task)
        self._task = None
        await self._close_producer()

    async def backlog(self) -> int:
        async with self._db.pool.acquire() as conn:
            return int(await conn.fetchval(f'SELECT count(*) FROM "{SCHEMA}".outbox'))

    async def health(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"ok": self.connected and self.last_error is None, "published": self.published}
        if self.last_error:
            detail["error"] = self.last_error
        with contextlib.suppress(*DB_ERRORS):
            detail["backlog"] = await self.backlog()
        return detail

    def _security_options(self) -> dict[str, Any]:
        """aiokafka's security options for one connection: the password file and the TLS files are read now."""
        kafka = self._kafka
        options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
        if kafka.tls:
            options["ssl_context"] = kafka.ssl_context()
        if kafka.sasl:
            options.update(sasl_mechanism=kafka.sasl_mechanism, sasl_plain_username=kafka.sasl_username,
                           sasl_plain_password=kafka.password())
        return options

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            security = self._security_options()
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap, acks="all", enable_idempotence=False,
                request_timeout_ms=self._request_timeout_ms, retry_backoff_ms=200, linger_ms=5, **security,
            )
            self._security = security
            try:
                await self._start(producer)
                await self._ensure_topic(producer, self._topic)
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self._producer = producer
        return self._producer

    async def _start(self, client: Any) -> None:
        """Start an aiokafka producer or admin client; a failure becomes KafkaUnusable saying why."""
        try:
            await client.start()
        except KafkaConnectionError as exc:  # every bootstrap server failed; aiokafka only logged the reasons
            raise KafkaUnusable(f"no Kafka bootstrap server could be used: {await self._why_not()}") from exc
        except (KeyError, ValueError) as exc:  # aiokafka's SCRAM client, given a server-final without a signature
            if not self._kafka.sasl:
                raise
            raise KafkaUnusable(self._auth_failed(exc)) from exc

    async def _why_not(self) -> str:
        """Connect to each bootstrap server once more, to tell why none could be used."""
        reasons = []
        for server in (s.strip() for s in self._bootstrap.split(",")):
            host, _, port = server.rpartition(":")
            try:
                conn = await create_conn(host.strip("[]"), int(port), request_timeout_ms=self._request_timeout_ms,
                                         **self._security)
            except (OSError, KafkaError, TimeoutError, KeyError, ValueError) as exc:
                reasons.append(f"{server}: {self._reason(exc)}")
            else:
                conn.close()
                reasons.append(f"{server}: answers on a second try")
        return "; ".join(reasons)

    def _reason(self, exc: BaseException) -> str:
        kafka = self._kafka
        if isinstance(exc, ssl.SSLCertVerificationError):
            ca = f"{PREFIX}KAFKA_SSL_CAFILE={kafka.ssl_cafile!r}" if kafka.ssl_cafile else "the system's trust store"
            return f"TLS: the broker's certificate is not trusted ({exc.verify_message}; CA: {ca})"
        if isinstance(exc, ssl.SSLError):
            return (f"TLS handshake failed ({exc.reason or exc}); does the listener speak "
                    f"{PREFIX}KAFKA_SECURITY_PROTOCOL={kafka.security_protocol}?")
        if kafka.sasl and isinstance(exc, (KeyError, ValueError, *_SASL_ERRORS)):
            return self._auth_failed(exc)
        if isinstance(exc, KafkaConnectionError) and "closed" in str(exc):  # hung up on us: a mismatch, usually
            checks = [f"{PREFIX}KAFKA_SECURITY_PROTOCOL={kafka.security_protocol}"]
            if kafka.sasl:
                checks.append(f"{PREFIX}KAFKA_SASL_MECHANISM={kafka.sasl_mechanism}")
            cert = (f", and whether it requires a client certificate ({PREFIX}KAFKA_SSL_CERTFILE)"
                    if kafka.tls and not kafka.ssl_certfile else "")
            return f"{exc}: the broker hung up; check {' and '.join(checks)} against its listener{cert}"
        return str(exc) if isinstance(exc, KafkaError) else f"{type(exc).__name__}: {exc}"  # aiokafka's has the name

    def _auth_failed(self, exc: BaseException) -> str:
        kafka = self._kafka
        if isinstance(exc, KeyError):
            detail = "the broker's last SCRAM message carries no server signature: it refused the credentials"
        else:
            detail = f"{type(exc).__name__}: {exc}"
        password = (f"{PREFIX}KAFKA_SASL_PASSWORD_FILE={kafka.sasl_password_file!r}" if kafka.sasl_password_file
                    else f"{PREFIX}KAFKA_SASL_PASSWORD")
        return (f"SASL {kafka.sasl_mechanism} authentication as {kafka.sasl_username!r} failed ({detail}); check "
                f"{PREFIX}KAFKA_SASL_USERNAME, {password} and {PREFIX}KAFKA_SASL_MECHANISM")

    async def _ensure_topic(self, producer: AIOKafkaProducer, topic: str) -> None:
        """Make sure `topic` exists before anything is sent to it: create it (create_topic) or refuse."""
        if topic in self._ready_topics:
            return
        kafka = self._kafka
        shape = (f"{kafka.topic_partitions} partition(s), replication factor {kafka.topic_replication_factor}, "
                 f"min.insync.replicas={kafka.topic_min_insync_replicas}")
        replicas = await self._replicas(producer, topic)
        if replicas is None:
            if not kafka.create_topic:
                raise KafkaUnusable(
                    f"audit topic {topic!r} does not exist on the broker and {PREFIX}KAFKA_CREATE_TOPIC=0 (the "
                    f"default with {PREFIX}ENV=prod: the operator creates it); create it ({shape}), or set "
                    f"{PREFIX}KAFKA_CREATE_TOPIC=1"
                )
            await self._create_topic(topic, shape)
        elif replicas < kafka.topic_replication_factor:
            log.warning("audit topic %s has %d replica(s), fewer than %sKAFKA_TOPIC_REPLICATION_FACTOR=%d",
                        topic, replicas, PREFIX, kafka.topic_replication_factor)
        self._ready_topics.add(topic)

    async def _replicas(self, producer: AIOKafkaProducer, topic: str) -> int | None:
        """The topic's replica count (the fewest of any partition), or None when it does not exist.

        Asked with allow_auto_topic_creation=False: a broker with auto.create.topics.enable would otherwise create
        the topic with its own defaults just because it was named."""
        client = producer.client
        node = client.get_random_node()
        if node is None:
            raise KafkaUnusable("the broker's metadata lists no broker to ask about the audit topic")
        response = await client.send(node, MetadataRequest([topic], allow_auto_topic_creation=False))
        for entry in response.to_object()["topics"]:
            if entry["topic"] != topic:
                continue
            code = int(entry["error_code"])
            if code == UnknownTopicOrPartitionError.errno:
                return None
            if code:
                error = for_code(code)
                hint = (" (the service's principal needs Describe and Write on it)"
                        if error is TopicAuthorizationFailedError else "")
                raise KafkaUnusable(f"audit topic {topic!r}: the broker answered {error.__name__}{hint}")
            partitions = entry["partitions"]
            return min(len(p["replicas"]) for p in partitions) if partitions else 0
        return None

    async def _create_topic(self, topic: str, shape: str) -> None:
        kafka = self._kafka
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, request_timeout_ms=self._request_timeout_ms,
                                    **self._security)
        try:
            await self._start(admin)
            response = await admin.create_topics([NewTopic(
                topic, num_partitions=kafka.topic_partitions, replication_factor=kafka.topic_replication_factor,
                topic_configs={"min.insync.replicas": str(kafka.topic_min_insync_replicas)},
            )])
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
        for name, code, *rest in response.topic_errors:
            if code in (0, TopicAlreadyExistsError.errno):  # created, or by another replica meanwhile
                continue
            message = f": {rest[0]}" if rest and rest[0] else ""
            raise KafkaUnusable(
                f"could not create audit topic {name!r} ({shape}): {for_code(code).__name__}{message}; set "
                f"{PREFIX}KAFKA_TOPIC_REPLICATION_FACTOR and {PREFIX}KAFKA_TOPIC_MIN_INSYNC_REPLICAS to what the "
                f"cluster can hold, or create the topic and set {PREFIX}KAFKA_CREATE_TOPIC=0"
            )
        log.info("created audit topic %s (%s)", topic, shape)

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        self.connected = False
        self._ready_topics.clear()  # a new connection may meet a new broker (memory storage, a failover)
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def drain_once(self) -> int:
        """Publish one batch; returns how many rows were published (0 when the outbox is empty)."""
        async with self._db.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f'SELECT seq, event_id, topic, key, payload FROM "{SCHEMA}".outbox ORDER BY seq '
                "LIMIT $1 FOR UPDATE SKIP LOCKED",
                BATCH,
            )
            if not rows:
                return 0
            producer = await self._ensure_producer()
            self.connected = True
            for topic in sorted({row["topic"] for row in rows} - self._ready_topics):
                await self._ensure_topic(producer, topic)
            futures = [
                await producer.send(
                    row["topic"], row["payload"].encode(), key=row["key"].encode(),
                    headers=[("dedupe_key", row["event_id"].encode())],
                )
                for row in rows
            ]
            await asyncio.gather(*futures)  # every one acknowledged (acks=all) before the rows go
            await conn.execute(f'DELETE FROM "{SCHEMA}".outbox WHERE seq = ANY($1::bigint[])',
                               [row["seq"] for row in rows])
        self.published += len(rows)
        metrics.AUDIT_PUBLISHED.inc(len(rows))
        self.last_success = time.time()
        self.last_error = None
        return len(rows)

    async def _loop(self) -> None:
        backoff = self._poll_s
        while True:
            try:
                while await self.drain_once():
                    pass
                backoff = self._poll_s
                if self._producer is None:  # nothing to send yet: still prove the broker answers
                    await self._ensure_producer()
                    self.connected = True
                    self.last_error = None  # usable again (e.g. the operator created the topic): say so now
            except asyncio.CancelledError:
                raise
            except (KafkaError, KafkaUnusable, ConfigError, OSError, TimeoutError, *DB_ERRORS) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"[:600]
                log.warning("outbox publish failed (%s); retrying in %.1fs", self.last_error, backoff)
                metrics.AUDIT_PUBLISH_FAILURES.inc()
                if isinstance(exc, (KafkaError, KafkaUnusable, ConfigError, OSError, TimeoutError)):
                    await self._close_producer()
                backoff = min(self._max_backoff_s, backoff * 2)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
