"""Writes to the Kubernetes API that the operator tools need (reads come from targets.kube).

Objects travel as the API's own JSON (dicts), exactly like `KubeTarget._get` reads them. Two ways to write:
- GET, modify, PUT back with the resourceVersion read (`put`): a concurrent change is a 409 instead of a lost
  update, and a controller that writes the object's status meanwhile (a Deployment during a rollout) makes it a
  409 too;
- PATCH only the fields to change (`patch`, strategic merge; `merge_patch`, RFC 7386): nothing else of the object
  is sent, so nothing written meanwhile is overwritten and, without a resourceVersion in the patch, there is no
  precondition to fail. With `metadata.resourceVersion` in a merge patch the write is conditional (409 when the
  object changed since it was read); `retry_conflicts` re-runs such a read-then-patch a bounded number of times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from targets.kube import KubeTarget, api_message

T = TypeVar("T")
CONFLICT = 409
CONFLICT_ATTEMPTS = 5


class KubeError(Exception):
    """An API call failed; the message carries the API's own reason, `status` its HTTP status (None when the
    error did not come from an API answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def request(target: KubeTarget, method: str, path: str, body: Any = None,
            content_type: str = "application/json") -> Any:
    """One API call through the target's own (KubeTarget._request); a refusal is a KubeError carrying the API's
    message and status."""
    from kubernetes.client.exceptions import ApiException

    try:
        return target._request(method, path, body, content_type)
    except ApiException as exc:
        raise KubeError(f"{method} {path.partition('?')[0]}: {api_message(exc)}", exc.status) from None



def get(target: KubeTarget, path: str) -> dict[str, Any]:
    return dict(request(target, "GET", path))


def put(target: KubeTarget, path: str, obj: dict[str, Any]) -> dict[str, Any]:
    return dict(request(target, "PUT", path, obj))


def patch(target: KubeTarget, path: str, changes: dict[str, Any]) -> dict[str, Any]:
    """A strategic-merge PATCH, as `kubectl set image` sends: lists of containers merge by name, and no
    resourceVersion is sent, so a controller writing the status meanwhile causes no 409 Conflict."""
    return dict(request(target, "PATCH", path, changes, "application/strategic-merge-patch+json"))


def merge_patch(target: KubeTarget, path: str, changes: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge PATCH (RFC 7386), where no list needs merging by key (a Secret's `data` is a map): maps merge
    key by key, a null removes the key, lists are replaced whole. Unconditional unless `changes` carries
    `metadata.resourceVersion`: then the API answers 409 Conflict when the object changed since that version."""
    return dict(request(target, "PATCH", path, changes, "application/merge-patch+json"))


def retry_conflicts(attempt: Callable[[], T], what: str, attempts: int = CONFLICT_ATTEMPTS,
                    sleep: Callable[[float], None] = time.sleep, backoff: float = 0.2) -> T:
    """Run `attempt` until it does not meet 409 Conflict, at most `attempts` times, waiting a little longer each
    time. `attempt` must re-read whatever its write depends on: a 409 means that changed. Other errors pass
    through at once; after the last 409, a KubeError (status 409) says what could not be written and why."""
    for n in range(1, attempts + 1):
        try:
            return attempt()
        except KubeError as exc:
            if exc.status != CONFLICT:
                raise
            if n == attempts:
                raise KubeError(f"{what}: gave up after {attempts} attempts, each answered 409 Conflict (something "
                                f"else keeps writing the object; last answer: {exc})", CONFLICT) from None
            sleep(backoff * n)
    raise AssertionError("unreachable")  # the loop returns or raises


def deployment_path(target: KubeTarget, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{target.namespace}/deployments/{name}"


def secret_path(target: KubeTarget, name: str) -> str:
    return f"/api/v1/namespaces/{target.namespace}/secrets/{name}"
