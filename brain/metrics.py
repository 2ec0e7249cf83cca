"""Prometheus metrics for both apps.

Multiprocess-safe: when `PROMETHEUS_MULTIPROC_DIR` is set (the CLI sets it for `--workers` > 1) every worker writes
its samples there and `/metrics` aggregates them with `MultiProcessCollector`. Without it, the default registry
serves a single process.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter(
    "somabrain_requests_total", "HTTP requests answered", ["app", "method", "route", "status"]
)
ERRORS = Counter(
    "somabrain_request_errors_total", "HTTP requests answered with an error", ["app", "method", "route", "error"]
)
LATENCY = Histogram(
    "somabrain_request_duration_seconds",
    "HTTP request latency",
    ["app", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
DEPENDENCY_UP = Gauge(
    "somabrain_dependency_up",
    "1 when the dependency answered its last background check (min over live workers)",
    ["app", "dependency"],
    multiprocess_mode="livemin",
)
READY = Gauge(
    "somabrain_ready", "1 when the app is ready to serve (min over live workers)", ["app"],
    multiprocess_mode="livemin",
)
PREDICTOR_LATENCY = Histogram(
    "somabrain_predictor_seconds",
    "Time from submitting a vector to the micro-batcher to its score",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)
PREDICTOR_BATCH = Histogram(
    "somabrain_predictor_batch_size",
    "Vectors scored per micro-batch (one jitted call each): how much concurrent requests share",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
AUDIT_PUBLISHED = Counter("somabrain_audit_published_total", "Audit events acknowledged by Kafka")
AUDIT_PUBLISH_FAILURES = Counter("somabrain_audit_publish_failures_total", "Failed outbox drain attempts")
#: Why the gate refused a request: a fixed set, so no client can add a series.
REFUSAL_REASONS = ("unauthenticated", "forbidden", "rate_limited", "unavailable")
REFUSALS = Counter(
    "somabrain_refusals_total", "Tenant-route requests the gate refused, by reason", ["app", "reason"]
)
JOURNAL_QUEUED = Counter("somabrain_journal_queued_total", "/remember writes queued while SomaMemory was down")
JOURNAL_REPLAYED = Counter("somabrain_journal_replayed_total", "Queued writes replayed into SomaMemory")


def render() -> tuple[bytes, str]:
    """The exposition text for `/metrics`, aggregated across workers when running multiprocess."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
