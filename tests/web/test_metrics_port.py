"""`/metrics` on a port of its own (SOMABRAIN_METRICS_PORT), for both apps as real Hypercorn processes.

The monitoring namespace may reach that port and no other (k8s/base/networkpolicies.yaml), so the port must serve
`/metrics` and nothing else, and the app's own port must no longer serve `/metrics`. Before the setting, both apps
served `/metrics` beside the data routes, on 9696 and 9595.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from localservers.servers import AppServer, PostgresServer, free_port


def _scrape_and_routes(server: AppServer, metrics_port: int, app: str) -> None:
    metrics_url = f"http://127.0.0.1:{metrics_port}"
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    scraped = httpx.get(f"{metrics_url}/metrics")
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    assert f'somabrain_requests_total{{app="{app}",method="GET",route="/healthz",status="200"}}' in scraped.text
    head = httpx.head(f"{metrics_url}/metrics")
    assert head.status_code == 200 and head.content == b""
    # The app's port: no /metrics (and not in its OpenAPI document, so schemathesis does not look for it).
    moved = httpx.get(f"{server.url}/metrics")
    assert moved.status_code == 404 and str(metrics_port) in moved.json()["detail"]
    assert "/metrics" not in httpx.get(f"{server.url}/openapi.json").json()["paths"]
    # The metrics port: nothing but GET /metrics, however the request is dressed up.
    for method, path in (("GET", "/health"), ("GET", "/readyz"), ("GET", "/openapi.json"), ("POST", "/recall"),
                         ("POST", "/metrics"), ("GET", "/metrics/"), ("DELETE", f"/memories/{'a' * 32}")):
        answer = httpx.request(method, f"{metrics_url}{path}", headers={"X-Tenant-ID": "t1"})
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["error"] == "not_found"


def test_the_api_serves_metrics_on_the_metrics_port_only(strict_env: dict[str, str], run_dir: Path) -> None:
    port = free_port()
    api = AppServer("api", {**strict_env, "SOMABRAIN_METRICS_PORT": str(port)}, run_dir, "--workers", "2")
    api.start()
    try:
        _scrape_and_routes(api, port, "api")
    finally:
        assert api.stop() == 0


def test_somamemory_serves_metrics_on_the_metrics_port_only(postgres_server: PostgresServer, run_dir: Path) -> None:
    port = free_port()
    memory = AppServer("memory", {"SOMABRAIN_POSTGRES_DSN": postgres_server.dsn, "SOMABRAIN_METRICS_PORT": str(port)},
                       run_dir)
    memory.start()
    try:
        _scrape_and_routes(memory, port, "somamemory")
    finally:
        assert memory.stop() == 0


def test_without_the_setting_metrics_stay_beside_the_routes(memory_server: AppServer) -> None:
    assert httpx.get(f"{memory_server.url}/metrics").status_code == 200
    assert "/metrics" in httpx.get(f"{memory_server.url}/openapi.json").json()["paths"]


@pytest.mark.parametrize(("value", "message"), [
    ("9595", "is the --bind port"),
    ("0", "must be between 1 and 65535"),
    ("http", "expected a whole number"),
])
def test_a_bad_metrics_port_is_one_line_exit_2(value: str, message: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SOMABRAIN_")}
    env = {**clean, "SOMABRAIN_POSTGRES_DSN": "postgresql://u:p@127.0.0.1:1/d", "SOMABRAIN_METRICS_PORT": value}
    run = subprocess.run([sys.executable, "-m", "brain.cli", "memory", "--bind", "127.0.0.1:9595"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run
    assert message in run.stderr and len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
