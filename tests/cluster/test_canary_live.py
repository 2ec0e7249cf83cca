"""The cluster canary and teardown, on the real local cluster (`make cluster-test`).

- the canary passes on the running cluster: registry image, storage, DNS, Service, TLS ingress, NetworkPolicy
  deny/allow;
- the canary's deny step really depends on the policy: with the NetworkPolicy controller stopped and its rules
  flushed, the same run fails at "NetworkPolicy deny" (so the check can fail, and enforcement is not an accident of
  the network set-up).

These tests need root and a cluster that `make cluster` started; they are not part of `make unit`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "scripts" / "cluster" / "cluster.sh"



def canary() -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLUSTER), "canary"], capture_output=True, text=True, timeout=600, check=False)


def test_canary_passes() -> None:
    run = canary()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "7 passed, 0 failed" in run.stdout
    for check in ("registry image", "storage", "cluster DNS", "Service", "TLS ingress", "NetworkPolicy deny",
                  "NetworkPolicy allow"):
        assert f"ok   {check}" in run.stdout


def test_canary_fails_without_policy_enforcement() -> None:
    subprocess.run([str(CLUSTER), "policy-controller", "stop"], check=True, timeout=120)
    try:
        run = canary()
    finally:
        subprocess.run([str(CLUSTER), "policy-controller", "start"], check=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "FAIL NetworkPolicy deny" in run.stdout
    assert "5 passed, 1 failed" in run.stdout
