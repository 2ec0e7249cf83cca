"""Writes to the Kubernetes API that the operator tools need (reads come from conformance.targets.kube).

Objects travel as the API's own JSON (dicts), exactly like `KubeTarget._get` reads them: GET, modify, PUT back
with the resourceVersion read, so a concurrent change is a 409 instead of a lost update.
"""

from __future__ import annotations

import json
from typing import Any

from conformance.targets.kube import REQUEST_TIMEOUT, KubeTarget


class KubeError(Exception):
    """An API call failed; the message carries the API's own reason."""


def request(target: KubeTarget, method: str, path: str, body: Any = None,
            content_type: str = "application/json") -> Any:
    path, _, query = path.partition("?")
    query_params = [tuple(kv.split("=", 1)) for kv in query.split("&") if kv] if query else None
    params = target.api.param_serialize(method, path, body=body, query_params=query_params,
                                        header_params={"Accept": "application/json",
                                                       "Content-Type": content_type},
                                        auth_settings=["BearerToken"])
    response = target.api.call_api(*params, _request_timeout=REQUEST_TIMEOUT)
    response.read()
    if not 200 <= response.status <= 299:
        try:
            message = json.loads(response.data).get("message", "")
        except ValueError:
            message = response.data.decode("utf-8", "replace")[:300]
        raise KubeError(f"{method} {path}: {response.status} {message}")
    return json.loads(response.data) if response.data else None


def get(target: KubeTarget, path: str) -> dict[str, Any]:
    return dict(request(target, "GET", path))


def put(target: KubeTarget, path: str, obj: dict[str, Any]) -> dict[str, Any]:
    return dict(request(target, "PUT", path, obj))


def patch(target: KubeTarget, path: str, changes: dict[str, Any]) -> dict[str, Any]:
    """A strategic-merge PATCH, as `kubectl set image` sends: lists of containers merge by name, and no
    resourceVersion is sent, so a controller writing the status meanwhile causes no 409 Conflict."""
    return dict(request(target, "PATCH", path, changes, "application/strategic-merge-patch+json"))


def deployment_path(target: KubeTarget, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{target.namespace}/deployments/{name}"


def secret_path(target: KubeTarget, name: str) -> str:
    return f"/api/v1/namespaces/{target.namespace}/secrets/{name}"
