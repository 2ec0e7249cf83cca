"""Smoke test of the live compose stack: health, memory round trip, audit event in Kafka, limits, metrics.

Live (`make live`, pytest -m live): against a stack started by `scripts/stack.sh up` (see conftest.py).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from aiokafka import AIOKafkaConsumer

from tests.helpers.kafka import round_trip
from tests.helpers.role_probe import ROLE_PROBE, runtime_role
from tests.live.stack import ROOT, Stack, docker

pytestmark = pytest.mark.live

COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
AUDIT_TOPIC = "soma.audit"  # brain.settings default (SOMABRAIN_AUDIT_TOPIC is not set in compose)
AUDIT_DEADLINE_S = 60
SERVICES = ["somabrain", "somamemory", "sb_redis", "kafka", "sb_opa", "sb_postgres", "prometheus", "sb_ingress"]
# Prometheus scrapes every 15s (compose/prometheus/prometheus.yml): a few intervals for a successful scrape.
SCRAPE_VERDICT_DEADLINE_S = 90


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]
    return services


def size_in_bytes(value: str | int) -> int:
    """Compose's byte notation ("512m", "64M", "1g", "1000b", 1000) in bytes, as Docker reads it (1024-based)."""
    if isinstance(value, int):
        return value
    text = value.strip().lower()
    text = text[:-1] if len(text) > 1 and text.endswith("b") else text  # "512mb" -> "512m", "1000b" -> "1000"
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    if text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def test_size_in_bytes_reads_compose_notation() -> None:
    assert size_in_bytes("512m") == 536_870_912
    assert size_in_bytes("64M") == 67_108_864
    assert size_in_bytes("1g") == 1_073_741_824
    assert size_in_bytes("512mb") == 536_870_912
    assert size_in_bytes("1000b") == 1000
    assert size_in_bytes(1000) == 1000


def test_health_is_ready(stack: Stack) -> None:
    status, body = stack.http("GET", stack.url("SOMABRAIN_HOST_PORT", "/health"))
    assert status == 200, body
    assert body["ready"] is True, f"not ready, failing: {body.get('failing')}"
    assert body["ok"] is True
    assert body["strict_real"] is True
    assert body["predictor_provider"] == "mahal"
    assert body["components"]["memory"]["http"] is True
    assert body["components"]["wm_items"] == "tenant-scoped"


async def test_remember_then_recall_round_trips_through_somamemory_and_postgres(stack: Stack) -> None:
    tenant = f"smoke-{uuid.uuid4().hex[:12]}"
    content = f"live smoke marker {uuid.uuid4().hex}"
    status, stored = stack.http(
        "POST", stack.url("SOMABRAIN_HOST_PORT", "/remember"), {"content": content, "metadata": {"k": "v"}}, tenant
    )
    assert status == 201, stored
    item_id = stored["id"]

    status, recalled = stack.http(
        "POST", stack.url("SOMABRAIN_HOST_PORT", "/recall"), {"query": content, "top_k": 3}, tenant
    )
    assert status == 200, recalled
    assert [hit["content"] for hit in recalled["memory"] if hit["id"] == item_id] == [content]
    assert any(hit["id"] == item_id for hit in recalled["wm"])

    # The durable copy: SomaMemory's row in the stack's Postgres, read through the published port.
    conn = await asyncpg.connect(
        host="127.0.0.1", port=stack.port("POSTGRES_HOST_PORT"), user=stack.env["POSTGRES_USER"],
        password=stack.env["POSTGRES_PASSWORD"], database=stack.env["POSTGRES_DB"], timeout=10,
    )
    try:
        row = await conn.fetchrow(
            "SELECT content, metadata::text AS metadata FROM somamemory.memories WHERE tenant = $1 AND id = $2",
            tenant, item_id,
        )
    finally:
        await conn.close()
    assert row is not None and row["content"] == content

    # Another tenant sees nothing of it.
    status, other = stack.http(
        "POST", stack.url("SOMABRAIN_HOST_PORT", "/recall"), {"query": content, "top_k": 3}, tenant + "-other"
    )
    assert status == 200
    assert all(hit["id"] != item_id for hit in other["memory"] + other["wm"])


@pytest.mark.parametrize("service", SERVICES)
def test_container_limits_match_the_compose_file(stack: Stack, service: str) -> None:
    declared = compose_services()[service]
    host_config = stack.inspect(service)["HostConfig"]
    assert host_config["Memory"] == size_in_bytes(declared["mem_limit"])
    assert host_config["NanoCpus"] == round(float(declared["cpus"]) * 1e9)


def cgroup_limits(container_id: str) -> tuple[int, float] | None:
    """(memory bytes, cpus) as the kernel enforces them, for cgroup v1 and v2 layouts; None if not found."""
    base = Path("/sys/fs/cgroup")
    v1_mem = base / "memory" / "docker" / container_id / "memory.limit_in_bytes"
    if v1_mem.is_file():
        cpu_dir = next(
            (p for p in (base / "cpu" / "docker" / container_id, base / "cpu,cpuacct" / "docker" / container_id)
             if p.is_dir()),
            None,
        )
        if cpu_dir is None:
            return None
        quota = int((cpu_dir / "cpu.cfs_quota_us").read_text())
        period = int((cpu_dir / "cpu.cfs_period_us").read_text())
        return int(v1_mem.read_text()), quota / period
    for scope in (base / "system.slice" / f"docker-{container_id}.scope", base / "docker" / container_id):
        if (scope / "memory.max").is_file():
            quota_text, period_text = (scope / "cpu.max").read_text().split()
            return int((scope / "memory.max").read_text()), int(quota_text) / int(period_text)
    return None


@pytest.mark.parametrize("service", ["somabrain", "sb_postgres", "sb_redis"])
def test_kernel_enforces_the_limits(stack: Stack, service: str) -> None:
    declared = compose_services()[service]
    limits = cgroup_limits(stack.inspect(service)["Id"])
    if limits is None:
        pytest.skip("the container's cgroup is not visible from here (e.g. Docker Desktop's VM)")
    memory, cpus = limits
    assert memory == size_in_bytes(declared["mem_limit"])
    assert cpus == pytest.approx(float(declared["cpus"]))


def test_prometheus_scrapes_somabrain(stack: Stack) -> None:
    # Prometheus may have scraped before somabrain existed (a "down" verdict with a DNS error): wait for a
    # successful scrape, and fail with Prometheus' own error if none comes within a few scrape intervals.
    # Prometheus itself answers 503 until it is ready.
    deadline = time.monotonic() + SCRAPE_VERDICT_DEADLINE_S
    targets: list[dict[str, Any]] = []
    while True:
        status, body = stack.http("GET", stack.url("PROMETHEUS_HOST_PORT", "/api/v1/targets?state=active"))
        if status == 200:
            targets = [t for t in body["data"]["activeTargets"] if t["labels"].get("job") == "somabrain"]
            if targets and {t["health"] for t in targets} == {"up"}:
                return
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    assert status == 200, f"Prometheus API answered {status}: {body}"
    assert targets, "Prometheus has no target for job somabrain"
    pytest.fail(f"somabrain target not up: {[(t['scrapeUrl'], t['health'], t['lastError']) for t in targets]}")


async def test_kafka_published_port_serves_host_clients(stack: Stack) -> None:
    await round_trip(f"127.0.0.1:{stack.port('KAFKA_HOST_PORT')}", "smoke")


async def test_remember_publishes_an_audit_event_to_kafka(stack: Stack) -> None:
    tenant = f"smoke-audit-{uuid.uuid4().hex[:12]}"
    status, stored = stack.http(
        "POST", stack.url("SOMABRAIN_HOST_PORT", "/remember"), {"content": "audited smoke item"}, tenant
    )
    assert status == 201, stored
    # A host consumer on the published port, reading the topic from the start until our event shows up.
    consumer = AIOKafkaConsumer(
        AUDIT_TOPIC, bootstrap_servers=f"127.0.0.1:{stack.port('KAFKA_HOST_PORT')}",
        group_id=f"smoke-audit-{uuid.uuid4().hex[:8]}", auto_offset_reset="earliest",
        session_timeout_ms=6000, heartbeat_interval_ms=1000,
    )
    await consumer.start()
    found: dict[str, Any] | None = None
    try:
        deadline = time.monotonic() + AUDIT_DEADLINE_S
        while found is None and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            for message in (m for batch in batches.values() for m in batch):
                event = json.loads(message.value)
                if event.get("tenant") == tenant and event.get("item_id") == stored["id"]:
                    found = event
                    assert message.key == tenant.encode()
    finally:
        await consumer.stop()
    assert found is not None, f"no audit event for item {stored['id']} in {AUDIT_TOPIC} within {AUDIT_DEADLINE_S}s"
    assert found["action"] == "remember" and found["outcome"] == "ok"


# Runs inside the somabrain container (the API's own network identity): SomaMemory's data routes with no token, a
# wrong one, and the one the API holds (its SOMABRAIN_MEMORY_TOKEN), each answered with its HTTP status.
_TOKEN_PROBE = """
import json, os, urllib.request, urllib.error
def status(token):
    headers = {"Content-Type": "application/json", "X-Tenant-ID": "t-token-probe"}
    if token:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request("http://somamemory:9595/recall", data=json.dumps({"query": "x"}).encode(),
                                 headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
print(json.dumps([status(None), status("w" * 40), status(os.environ["SOMABRAIN_MEMORY_TOKEN"])]))
"""


def test_somamemory_serves_data_only_to_the_holder_of_the_service_token(stack: Stack) -> None:
    answers = json.loads(docker("exec", stack.container_id("somabrain"), "python3", "-c", _TOKEN_PROBE))
    assert answers == [401, 401, 200], answers



@pytest.mark.parametrize("service", ["somabrain", "somamemory"])
def test_the_apps_log_in_as_a_role_that_may_only_read_and_write(stack: Stack, service: str) -> None:
    """Issue 14 item 12: before sb_dbinit both apps logged in as the Postgres superuser and all four changes were
    allowed. Now the runtime role of .env.local is who they are, and it may read and write but change nothing."""
    answers = json.loads(docker("exec", stack.container_id(service), "python3", "-c", ROLE_PROBE))
    assert answers == runtime_role(stack.env["POSTGRES_APP_USER"]), answers
    env = stack.inspect(service)["Config"]["Env"]
    assert not [e for e in env if stack.env["POSTGRES_PASSWORD"] in e], "the superuser's password is in the app"


def test_db_init_ran_once_and_exited_0(stack: Stack) -> None:
    ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={stack.project}",
                 "--filter", "label=com.docker.compose.service=sb_dbinit").split()
    assert len(ids) == 1, ids
    state = json.loads(docker("inspect", ids[0]))[0]["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 0, state
    logs = subprocess.run(["docker", "logs", ids[0]], capture_output=True, text=True, timeout=60).stdout
    assert f"role {stack.env['POSTGRES_APP_USER']}: password set" in logs, logs
