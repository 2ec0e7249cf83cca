"""A produce-then-consume round trip through a Kafka-protocol broker, as a host client would make it."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def round_trip(bootstrap: str, topic_prefix: str = "t") -> None:
    """Produce one message to a fresh topic and read it back; fails (assert or timeout) if the broker cannot."""
    topic, payload = f"{topic_prefix}-{uuid.uuid4().hex[:12]}", uuid.uuid4().bytes
    # Tansu (the air-gapped stand-in) rejects the idempotent producer; acks=all works on both brokers.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, payload)
    finally:
        await producer.stop()
    # A short session timeout: Tansu's group join takes session_timeout / 2.
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"{topic}-group", auto_offset_reset="earliest",
        session_timeout_ms=6000, heartbeat_interval_ms=1000,
    )
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=60)
    finally:
        await consumer.stop()
    assert message.value == payload
