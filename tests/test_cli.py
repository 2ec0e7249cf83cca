"""`somabrain api|memory` as real processes: config errors, readiness that follows SomaMemory, SIGTERM, workers."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from localservers.servers import AppServer, PostgresServer, http_status, wait_for


def _run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SOMABRAIN_")}
    return subprocess.run([sys.executable, "-m", "brain.cli", *args], env={**clean, **env}, capture_output=True,
                          text=True, timeout=60)


def test_config_errors_are_one_line_exit_2() -> None:
    cases = [
        ({"SOMABRAIN_STRICT_REAL": "1", "SOMABRAIN_PREDICTOR_PROVIDER": "stub", "SOMABRAIN_REDIS_URL": "redis://x"},
         "SOMABRAIN_PREDICTOR_PROVIDER=stub"),
        ({"SOMABRAIN_FORCE_FULL_STACK": "1", "SOMABRAIN_REDIS_URL": "redis://x"}, "SOMABRAIN_POSTGRES_DSN is not set"),
        ({"SOMABRAIN_REDIS_URL": "redis://x", "SOMABRAIN_POSTGRES_DSN": "postgresql://u:pw@h:port/db"},
         "SOMABRAIN_POSTGRES_DSN="),
        ({}, "SOMABRAIN_REDIS_URL is not set"),
    ]
    for env, expected in cases:
        result = _run_cli(env, "api")
        assert result.returncode == 2, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert expected in lines[0]
        assert "Traceback" not in result.stderr
    bad_bind = _run_cli({"SOMABRAIN_REDIS_URL": "redis://x"}, "api", "--bind", "nowhere")
    assert bad_bind.returncode == 2 and "--bind" in bad_bind.stderr
    memory = _run_cli({}, "memory")
    assert memory.returncode == 2 and "SOMABRAIN_POSTGRES_DSN is not set" in memory.stderr



def test_prod_refuses_to_start_without_auth_or_policy() -> None:
    """ENV=prod alone decides: no STRICT_REAL needed. The port is held, so a start that is not refused fails too."""
    prod = {"SOMABRAIN_ENV": "prod", "SOMABRAIN_REDIS_URL": "redis://x"}
    jwt = {"SOMABRAIN_JWT_PUBLIC_KEY_PATH": "/secrets", "SOMABRAIN_JWT_ISSUER": "i", "SOMABRAIN_JWT_AUDIENCE": "a"}
    cases = [
        ({**prod, "SOMABRAIN_DISABLE_AUTH": "1"}, "SOMABRAIN_DISABLE_AUTH=1 is refused when SOMABRAIN_ENV=prod"),
        (prod, "SOMABRAIN_JWT_PUBLIC_KEY_PATH is not set"),
        ({**prod, **jwt}, "SOMABRAIN_OPA_URL is not set"),
    ]
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        bind = f"127.0.0.1:{held.getsockname()[1]}"
        for env, expected in cases:
            result = _run_cli(env, "api", "--bind", bind)
            assert result.returncode == 2, result
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"somabrain api: configuration error: {expected}"), lines


def test_help_describes_both_commands() -> None:
    result = _run_cli({}, "--help")
    assert result.returncode == 0
    assert "api" in result.stdout and "memory" in result.stdout
    api_help = _run_cli({}, "api", "--help").stdout
    assert "--bind" in api_help and "--workers" in api_help and "9696" in api_help
    assert "--loop" in api_help and "uvloop" in api_help


def test_unknown_loop_is_a_usage_error() -> None:
    result = _run_cli({}, "api", "--loop", "trio")
    assert result.returncode == 2
    assert "invalid choice: 'trio'" in result.stderr and "Traceback" not in result.stderr


def test_serves_on_uvloop_unless_asked_for_asyncio(strict_env: dict[str, str], run_dir: Path) -> None:
    """The running app names its event loop's class at start: uvloop's by default, the standard library's with
    --loop asyncio; both serve."""
    for extra, loop in (((), "uvloop.Loop"), (("--loop", "asyncio"), "asyncio.unix_events._UnixSelectorEventLoop")):
        api = AppServer("api", {**strict_env, "SOMABRAIN_LOG_LEVEL": "info"}, run_dir, *extra)
        api.start()
        try:
            assert httpx.get(api.url + "/health").json()["ready"] is True
            log = api.process.log_tail(400)
            assert f"api serving on the event loop {loop}" in log, log
        finally:
            assert api.stop() == 0


def test_readiness_follows_somamemory(strict_env: dict[str, str], postgres_server: PostgresServer,
                                      run_dir: Path) -> None:
    """Done-when of the service-core issue: kill SomaMemory and /health flips to ready:false, memory.http:false."""
    memory = AppServer("memory", {"SOMABRAIN_POSTGRES_DSN": postgres_server.dsn}, run_dir)
    memory.start()
    api = AppServer("api", {**strict_env, "SOMABRAIN_MEMORY_HTTP_ENDPOINT": memory.url,
                            "SOMABRAIN_DEPENDENCY_TIMEOUT": "1"}, run_dir)
    api.start()
    try:
        health = httpx.get(api.url + "/health").json()
        assert health["ready"] is True and health["components"]["memory"]["http"] is True
        memory.stop()
        wait_for(lambda: httpx.get(api.url + "/health").json()["ready"] is False, "ready:false after the kill")
        health = httpx.get(api.url + "/health").json()
        assert health["components"]["memory"]["http"] is False
        assert http_status(api.url + "/readyz") == 503
        assert httpx.post(api.url + "/remember", json={"content": "x"},
                          headers={"X-Tenant-ID": "t1"}).status_code == 503
        memory.start()
        wait_for(lambda: httpx.get(api.url + "/health").json()["ready"] is True, "ready:true after the restart")
    finally:
        assert api.stop() == 0  # SIGTERM is a graceful stop
        memory.stop()


def test_two_workers_share_metrics(strict_env: dict[str, str], run_dir: Path) -> None:
    api = AppServer("api", strict_env, run_dir, "--workers", "2")
    api.start()
    try:
        for _ in range(20):
            assert httpx.get(api.url + "/healthz").status_code == 200
        text = httpx.get(api.url + "/metrics").text
        match = re.search(r'somabrain_requests_total\{app="api",method="GET",route="/healthz",status="200"\} (\S+)',
                          text)
        assert match is not None, text[:2000]
        assert float(match.group(1)) >= 20  # every worker's requests, aggregated
    finally:
        assert api.stop() == 0
