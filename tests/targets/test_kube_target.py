"""KubeTarget where no cluster is needed: an API server that does not answer, the choice of the pod a probe runs
in (pick_serving, on pods as the API returns them) and what keeps an initContainer from having finished
(init_container_problem, on its statuses as the API returns them). No fake: everything else of the target (reads, probes
through the exec websocket and the ephemeral container, unready workloads, rollouts) is tested on the real cluster,
tests/cluster/test_kube_target_live.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from targets.base import ProbeError, TargetUnreachable
from targets.kube import KubeTarget, init_container_problem, pick_serving


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "nowhere",
        "clusters": [{"name": "nowhere", "cluster": {"server": server}}],
        "users": [{"name": "nowhere", "user": {"token": "unused"}}],
        "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "nowhere"}}],
    }), encoding="utf-8")
    return path


def test_unanswering_api_is_a_clear_error(tmp_path: Path) -> None:
    config = kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(TargetUnreachable, match="does not answer"):
        KubeTarget(kubeconfig=str(config)).check_reachable()


def test_missing_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TargetUnreachable, match=r"it needs a Kubernetes cluster: cannot load"):
        KubeTarget(kubeconfig=str(tmp_path / "absent")).check_reachable()


def _pod(name: str, ready: bool = True, terminating: bool = False, containers: tuple[str, ...] = ("redis",),
         phase: str = "Running") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if terminating:
        meta["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    return {"metadata": meta, "spec": {"containers": [{"name": c} for c in containers]},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_probes_run_in_a_ready_pod_that_is_not_terminating() -> None:
    # A rollout: the old pod is Terminating (still Running), a new one not Ready yet, one Ready.
    pods = [_pod("old", terminating=True), _pod("new", ready=False), _pod("serving")]
    assert pick_serving(pods, "redis", "ns") == ("serving", "redis")


def test_the_workloads_container_is_chosen_by_name() -> None:
    assert pick_serving([_pod("p", containers=("istio-proxy", "redis"))], "redis", "ns") == ("p", "redis")
    assert pick_serving([_pod("p", containers=("sb-redis",))], "redis", "ns") == ("p", "sb-redis")
    with pytest.raises(ProbeError, match="none named 'redis'"):
        pick_serving([_pod("p", containers=("sidecar", "main"))], "redis", "ns")


def test_no_ready_pod_names_what_there_is() -> None:
    with pytest.raises(ProbeError, match=r"old \(Running, terminating, ready\), new \(Pending, not ready\)"):
        pick_serving([_pod("old", terminating=True), _pod("new", ready=False, phase="Pending")], "redis", "ns")


@pytest.mark.parametrize(("status", "expected"), [
    ({"name": "db-init", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}, None),
    ({"name": "db-init", "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}, ("FAIL", "exited 3 (Error)")),
    ({"name": "db-init", "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
      "lastState": {"terminated": {"exitCode": 3, "reason": "Error"}}},
     ("FAIL", "CrashLoopBackOff after it exited 3 (Error), restarted 2 time(s)")),
    ({"name": "db-init", "state": {"waiting": {"reason": "ImagePullBackOff"}}}, ("FAIL", "ImagePullBackOff")),
    ({"name": "db-init", "state": {"waiting": {"reason": "PodInitializing"}}}, ("WARN", "PodInitializing")),
    ({"name": "db-init", "state": {"running": {"startedAt": "2026-12-04T00:00:00Z"}}}, ("WARN", "still running")),
    (None, ("WARN", "no status yet (the pod is being scheduled)")),
])
def test_what_keeps_an_init_container_from_having_finished(status: dict[str, Any] | None,
                                                           expected: tuple[str, str] | None) -> None:
    """The initContainerStatuses shapes the API returns (the failing one is also met on the real cluster, in
    tests/cluster/test_doctor_live.py's broken stack)."""
    assert init_container_problem(status) == expected
