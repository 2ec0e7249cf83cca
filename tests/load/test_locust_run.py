"""Locust for real, headless, against the bare hello-world this test serves (load.hello_server on a free port of
127.0.0.1), and the whole `python -m load run` pipeline against it with a throw-away container to sample (that one
is marked `live`: it needs Docker and the stack's base image)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from load.locust_run import read_history, read_stats, run_locust
from tests.load.test_docker_stats import project, start  # noqa: F401 - the fixture is used by name

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def hello() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "load.hello_server", "--bind", f"127.0.0.1:{port}"], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/", timeout=2) as response:  # noqa: S310 - our own server
                assert json.load(response) == {"ok": True}
                break
        except OSError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("load.hello_server did not answer within 30 s")
    yield url
    process.terminate()
    process.wait(timeout=20)


def test_locust_plays_a_shape_and_writes_csv(hello: str, tmp_path: Path) -> None:
    code = run_locust(locustfile=ROOT / "load" / "locustfile_hello.py", host=hello, user_classes=("HelloUser",),
                      options=["--load-profile", "smoke", "--load-users", "2", "--load-duration", "4",
                               "--load-think", "0.05,0.1"],
                      csv_prefix=tmp_path / "locust", html=tmp_path / "locust.html", timeout=90,
                      log=tmp_path / "locust.log")
    assert code == 0
    routes, total = read_stats(tmp_path / "locust_stats.csv")
    assert [r.route for r in routes] == ["GET /"]
    assert routes[0].requests > 0 and routes[0].failures == 0
    assert routes[0].p50_ms is not None and routes[0].p99_ms is not None
    assert total is not None and total.requests == routes[0].requests
    history = read_history(tmp_path / "locust_stats_history.csv")
    assert history and max(p.users for p in history) == 2
    assert (tmp_path / "locust.html").stat().st_size > 0


@pytest.mark.live
def test_run_pipeline_reports_a_breach_with_exit_1(hello: str, tmp_path: Path, project: str,  # noqa: F811
                                                   base_image: str) -> None:
    """The hello-world has none of somabrain's routes: every POST fails, so the verdict must say BREACH."""
    start(project, "sleeper", base_image, "sleep", "120", memory="48m", cpus="0.2")
    env_file = tmp_path / "env"
    env_file.write_text(f"COMPOSE_PROJECT_NAME={project}\nSOMABRAIN_HOST_PORT=1\n")
    report = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "load", "run", "--env", "dev", "--env-file", str(env_file), "--endpoint", hello,
         "--profile", "smoke", "--users", "3", "--duration", "4", "--think", "0.1,0.2", "--report-dir", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=180, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "VERDICT: BREACH" in done.stdout
    verdict = json.loads((report / "verdict.json").read_text())
    assert verdict["passed"] is False
    assert any("failed" in b for b in verdict["breaches"])
    assert verdict["workloads"]["sleeper"]["memory_limit_bytes"] == 48 * 2**20
    assert verdict["workloads"]["sleeper"]["samples"] >= 3
    for name in ("locust_stats.csv", "locust.html", "samples.csv", "resources_sleeper.png"):
        assert (report / name).stat().st_size > 0, name
