"""Drain the Postgres outbox to Kafka, at least once.

One loop: take the oldest rows (`FOR UPDATE SKIP LOCKED`, so several replicas can drain side by side), send them
with acks=all, and delete them in the same transaction only after the broker acknowledged every one. A failure
rolls back and leaves the rows for the next try, after an exponential backoff. While the broker is down events
accumulate in the outbox; nothing is dropped. Message key = tenant (ordering per tenant), header `dedupe_key` = the
event id, which is also in the payload.

aiokafka's idempotent producer does not work against every Kafka-protocol broker (Tansu, in tests); acks=all
without idempotence plus the dedupe key gives the same guarantee to consumers that drop repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from brain import metrics, tasks
from brain.audit.store import SCHEMA
from brain.db import DB_ERRORS, Database

log = logging.getLogger(__name__)

BATCH = 200


class OutboxPublisher:
    def __init__(self, db: Database, bootstrap: str, topic: str, *, poll_s: float = 0.2,
                 max_backoff_s: float = 5.0, request_timeout_ms: int = 5000) -> None:
        self._db = db
        self._bootstrap = bootstrap
        self._topic = topic
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

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap, acks="all", enable_idempotence=False,
                request_timeout_ms=self._request_timeout_ms, retry_backoff_ms=200, linger_ms=5,
            )
            try:
                await producer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self._producer = producer
            await self._ensure_topic()
        return self._producer

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, request_timeout_ms=self._request_timeout_ms)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(self._topic, num_partitions=1, replication_factor=1)])
        except TopicAlreadyExistsError:
            pass
        except KafkaError as exc:  # brokers that auto-create topics may refuse the admin call; produce decides
            log.info("could not create topic %s (%s); relying on the broker", self._topic, exc)
        finally:
            await admin.close()

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        self.connected = False
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
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError, TimeoutError, *DB_ERRORS) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("outbox publish failed (%s); retrying in %.1fs", self.last_error, backoff)
                metrics.AUDIT_PUBLISH_FAILURES.inc()
                if isinstance(exc, (KafkaError, OSError, TimeoutError)):
                    await self._close_producer()
                backoff = min(self._max_backoff_s, backoff * 2)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
