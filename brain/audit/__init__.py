"""The audit pipeline: events written to a Postgres outbox in the change's own transaction, drained to Kafka.

- `events`: the event shape (schema_version 1) and its JSON form;
- `store`: the API's tables (memory index, audit events, outbox) and writing an event inside a transaction;
- `publisher`: drains the outbox to Kafka (`soma.audit`) with acks=all and backoff, at least once;
- `journal`: the durable local journal for /remember while SomaMemory is down (SOMABRAIN_OUTBOX_DIR).
"""
