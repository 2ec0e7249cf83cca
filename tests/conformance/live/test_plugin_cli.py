"""The conformance plugin end to end, as users run it: `pytest conformance/ --env ...` in a subprocess, where no
stack or cluster is needed: the usage errors (no --env, an unreachable cluster, an unknown compose project) and
the selection of one dimension by its mark (--collect-only touches no cluster). No fake: the prod runs against the
real cluster (TLS on good and bad endpoints, the NetworkPolicy checks) are tests/cluster/test_conformance_cli_live.py.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from tests.conformance.gate import REPO


def run_suite(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "conformance/", "-p", "no:cacheprovider", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)


def unanswering_kubeconfig(path: Path) -> Path:
    """A kubeconfig whose API server is a 127.0.0.1 port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "nowhere",
        "clusters": [{"name": "nowhere", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "nowhere", "user": {"token": "unused"}}],
        "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "nowhere"}}],
    }), encoding="utf-8")
    return path


def test_without_env_is_one_usage_error() -> None:
    proc = run_suite()
    assert proc.returncode == 4
    assert "choose the environment: --env dev" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_unreachable_cluster_is_one_usage_error(tmp_path: Path) -> None:
    proc = run_suite("--env", "prod", "--kubeconfig", str(unanswering_kubeconfig(tmp_path / "kc")))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "conformance --env prod: the Kubernetes API at" in proc.stderr and "does not answer" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and "FAILED" not in proc.stdout


def test_unknown_compose_project_is_one_usage_error() -> None:
    proc = run_suite("--env", "dev", "--compose-project", "sbconf-no-such-project")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "conformance --env dev:" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_marks_select_one_dimension(tmp_path: Path) -> None:
    proc = run_suite("--env", "prod", "--kubeconfig", str(unanswering_kubeconfig(tmp_path / "kc")), "-m", "tls",
                     "--collect-only", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    collected = [line for line in proc.stdout.splitlines() if "::" in line]
    assert collected and all(line.startswith("conformance/live/test_tls.py::") for line in collected)
