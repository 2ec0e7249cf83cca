"""The audit pipeline: events written to a Postgres outbox in the change's own transaction, drained to Kafka.

- `events`: the event shape (schema_version 1) and its JSON form;
- `store`: the API's tables (memory index, audit events, outbox) and writing an event inside a transaction;
- `publisher`: drains the outbox to Kafka (`soma.audit`) with acks=all and backoff, at least once;
- `writer`: group-commits the events that have no index row (e.g. /act), one statement per batch;
- `refusals`: the gate's refusals, audited in aggregate (one event per outcome and action per window).

The local journal for /remember while SomaMemory is down is not part of this pipeline: it is `brain.memory.journal`.
"""
