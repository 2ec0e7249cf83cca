"""Live: a ~30 s smoke profile against the running compose stack (`make live`, pytest -m live; `make up` first).

Checks that the run completes, the report files exist and the verdict parses. It asserts nothing about timing:
exit 0 (pass) and 1 (a breach, which the verdict names) are both a working tool; 2 is not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.live


def test_smoke_profile_against_the_live_stack(tmp_path: Path) -> None:
    report = tmp_path / "report"
    env_file = os.environ.get("SOMABRAIN_LIVE_ENV_FILE", str(ROOT / ".env.local"))
    done = subprocess.run(
        [sys.executable, "-m", "load", "run", "--env", "dev", "--env-file", env_file, "--profile", "smoke",
         "--duration", "30", "--report-dir", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    verdict = json.loads((report / "verdict.json").read_text())
    assert verdict["passed"] is (done.returncode == 0)
    assert verdict["run"]["profile"] == "smoke"
    assert {"somabrain", "somamemory", "sb_redis", "sb_postgres"} <= set(verdict["workloads"])
    for workload in verdict["workloads"].values():
        assert workload["samples"] > 0
    assert {"POST /recall", "POST /remember", "POST /act", "GET /health"} <= set(verdict["routes"])
    for name in ("locust_stats.csv", "locust_stats_history.csv", "locust.html", "samples.csv",
                 "resources_somabrain.png"):
        assert (report / name).stat().st_size > 0, name
    assert len(verdict["plots"]) == len(verdict["workloads"])
