"""`kubectl rollout status` for a Deployment: the same conditions, decided from one GET of the object and its pods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from targets.kube import KubeTarget

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
    from targets.kube_api import deployment_path, get

    deployment = get(target, deployment_path(target, name))
    selector = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    query = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    pods = get(target, f"/api/v1/namespaces/{target.namespace}/pods?labelSelector={query}").get("items") or []
    return rollout_state(deployment, list(pods))
