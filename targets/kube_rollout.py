"""Rolling Deployments: `kubectl rollout status` (the same conditions, decided from one GET of the object and its
pods), waiting for a roll until no pod of an older revision serves, and `kubectl rollout restart`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from targets.kube import KubeTarget
from targets.kube_api import deployment_path, get, patch, retry_conflicts

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"  # what `kubectl rollout restart` sets

FATAL_WAITING = ("ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "InvalidImageName",
                 "CreateContainerConfigError", "CreateContainerError")


@dataclass(frozen=True)
class Status:
    done: bool
    failed: bool
    message: str


def rollout_state(deployment: dict[str, Any], pods: list[dict[str, Any]]) -> Status:
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    meta = deployment.get("metadata") or {}
    wanted = int(spec.get("replicas", 1))
    # As kubectl: until the controller has observed this generation, every condition is the previous one's
    # (a ProgressDeadlineExceeded left by an earlier failed rollout must not fail this one).
    if int(meta.get("generation", 0)) > int(status.get("observedGeneration", 0)):
        return Status(False, False, "waiting for the deployment spec update to be observed")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return Status(False, True, f"progress deadline exceeded: {cond.get('message', '')}")
    image = ((spec.get("template") or {}).get("spec") or {}).get("containers", [{}])[0].get("image")
    for pod in pods:
        containers = (pod.get("spec") or {}).get("containers") or [{}]
        if containers[0].get("image") != image:
            continue
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in FATAL_WAITING:
                return Status(False, True, f"pod {pod['metadata']['name']}: {waiting['reason']}: "
                                           f"{waiting.get('message', '')}".rstrip(": "))
    updated = int(status.get("updatedReplicas", 0))
    total = int(status.get("replicas", 0))
    available = int(status.get("availableReplicas", 0))
    if updated < wanted:
        return Status(False, False, f"{updated} of {wanted} new replicas have been updated")
    if total > updated:
        return Status(False, False, f"{total - updated} old replicas are pending termination")
    if available < updated:
        return Status(False, False, f"{available} of {updated} updated replicas are available")
    return Status(True, False, f"successfully rolled out ({updated}/{wanted} replicas available)")


def current(target: KubeTarget, name: str) -> Status:
    deployment = get(target, deployment_path(target, name))
    selector = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    query = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    pods = get(target, f"/api/v1/namespaces/{target.namespace}/pods?labelSelector={query}").get("items") or []
    return rollout_state(deployment, list(pods))


def say(message: str) -> None:
    print(message, flush=True)


def wait(target: KubeTarget, name: str, timeout: float, sleep: Callable[[float], None] = time.sleep,
         interval: float = 1.0) -> tuple[bool, str]:
    """(succeeded, last message) of `kubectl rollout status deployment/NAME --timeout`, and then until no pod of
    an older revision is left: a terminating pod still serves through its preStop pause, with the old image or the
    old Secret, and the roll is not done while one can answer (seen on the real cluster: a key added by
    `rotate jwt-key --add` refused for a few seconds after "rolled out")."""
    deadline = time.monotonic() + timeout
    while True:
        status = current(target, name)
        if status.failed:
            return False, status.message
        if status.done:
            draining = old_pods(target, name)
            if not draining:
                return True, status.message
            status_message = f"{len(draining)} pod(s) of the previous revision still draining: {', '.join(draining)}"
            if time.monotonic() >= deadline:
                return False, f"timed out after {timeout:.0f} s: {status_message}"
            say(f"  {name}: {status_message}")
            sleep(interval)
            continue
        if time.monotonic() >= deadline:
            return False, f"timed out after {timeout:.0f} s: {status.message}"
        say(f"  {name}: {status.message}")
        sleep(interval)


def old_pods(target: KubeTarget, name: str) -> list[str]:
    """The Deployment's pods that are not of its current revision (terminating ones included)."""
    current_pods = {p["metadata"]["name"] for p in target.pods(name)}
    return sorted(p["metadata"]["name"] for p in target.pods(name, current_only=False)
                  if p["metadata"]["name"] not in current_pods)


def restart_stamp() -> str:
    """The value of kubectl.kubernetes.io/restartedAt: RFC 3339 as `kubectl rollout restart` writes it, to the
    microsecond, so two restarts within one second (a rollback right after a failed roll) still change the
    template and roll."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _restart_one(target: KubeTarget, name: str, stamp: str,
                 pod_spec: Callable[[dict[str, Any]], dict[str, Any]] | None) -> None:
    """One attempt: PATCH the pod template (strategic merge, as `kubectl rollout restart` does). No resourceVersion
    is sent, so the Deployment controller writing `status` meanwhile is no conflict; a 409 can still come back (the
    API server's own retries of the update run out, a webhook), then retry_conflicts calls this again. The
    Deployment is read (again) only for `pod_spec`: the annotation alone depends on nothing read."""
    path = deployment_path(target, name)
    template: dict[str, Any] = {"metadata": {"annotations": {RESTARTED_AT: stamp}}}
    if pod_spec is not None:
        template["spec"] = pod_spec(get(target, path))
    patch(target, path, {"spec": {"template": template}})


def restart(target: KubeTarget, names: tuple[str, ...], timeout: float,
            pod_spec: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> list[str]:
    """Roll the Deployments `names` (each by one PATCH, retried on 409) and wait for each: the problems found.
    `pod_spec(deployment)` returns more strategic-merge changes of the pod spec, made in the same PATCH.
    Raises KubeError when a PATCH is refused, or still meets 409 Conflict after CONFLICT_ATTEMPTS."""
    stamp = restart_stamp()
    for name in names:
        retry_conflicts(partial(_restart_one, target, name, stamp, pod_spec), f"restart of deployment/{name}")
    problems = []
    for name in names:
        ok, message = wait(target, name, timeout)
        say(f"deployment/{name}: {message}")
        if not ok:
            problems.append(f"deployment/{name}: {message}")
    return problems
