"""Small workloads for the cluster tests' scratch namespaces (the `scratch_namespace` fixture of conftest.py).

They run the images that are already in the cluster's registry, those of the running deployment: the somabrain
image (it has python3, so it can idle, serve a little HTTP, or allocate memory on demand) and the Redis one (no
python: the image that needs the conformance probes' ephemeral container). A Deployment named like one of
somabrain-prod's (somabrain, sb-redis, sb-opa, somamemory) is what targets.kube maps the workload
keys to (conformance.inventory), so KubeTarget, the doctor and the rollout read a scratch namespace as they read
somabrain-prod.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from tests.cluster.live import kubectl, service_account_kubeconfig

T = TypeVar("T")
IDLE = ["python3", "-c", "import signal; signal.pause()"]
# Serves the value of $REV on :8080 (the revision of the template it runs: which pod answered a probe).
SERVE_REV = ["python3", "-c", (
    "import http.server, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = os.environ['REV'].encode()\n"
    "        self.send_response(200)\n"
    "        self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "http.server.HTTPServer(('0.0.0.0', 8080), H).serve_forever()\n")]
NEVER_READY: dict[str, Any] = {"exec": {"command": ["false"]}, "periodSeconds": 2, "failureThreshold": 1}


@cache
def prod_image(deployment: str) -> str:
    """The image of somabrain-prod's Deployment (its first container): an image the cluster's registry has."""
    return kubectl("get", "deployment", deployment, "-o",
                   "jsonpath={.spec.template.spec.containers[0].image}").stdout.strip()


def somabrain_image() -> str:
    return prod_image("somabrain")


def deployment(name: str, *, image: str | None = None, container: str | None = None,
               command: list[str] | None = None, args: list[str] | None = None, env: dict[str, str] | None = None,
               replicas: int = 1, limits: dict[str, str] | None = None, readiness: dict[str, Any] | None = None,
               grace: int = 5, init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A Deployment `name` of one container (named `container`, default `name`), after the `init` containers when
    given, pods labelled app=NAME; rolling updates keep the old pod until the new one is Ready (maxUnavailable 0),
    as somabrain-prod's do."""
    spec: dict[str, Any] = {"name": container or name, "image": image or somabrain_image(),
                            "imagePullPolicy": "IfNotPresent"}
    if command is not None:
        spec["command"] = command
    if args is not None:
        spec["args"] = args
    if env:
        spec["env"] = [{"name": k, "value": v} for k, v in env.items()]
    if limits is not None:
        spec["resources"] = {"limits": limits, "requests": limits}
    if readiness is not None:
        spec["readinessProbe"] = readiness
    pod: dict[str, Any] = {"terminationGracePeriodSeconds": grace, "containers": [spec]}
    if init:
        pod["initContainers"] = init
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": pod}},
    }


def service(name: str, port: int, app: str | None = None) -> dict[str, Any]:
    """A ClusterIP Service `name` on `port` selecting the pods app=APP (default: app=NAME)."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": app or name}, "ports": [{"port": port, "targetPort": port}]}}


def apply(namespace: str, *objects: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", namespace=namespace,
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))


def rolled_out(namespace: str, name: str, timeout: int = 180) -> None:
    """`kubectl rollout status` of the Deployment: its newest pods are Ready."""
    kubectl("rollout", "status", f"deployment/{name}", f"--timeout={timeout}s", namespace=namespace,
            timeout=timeout + 30)


def get(namespace: str | None, *what: str) -> Any:
    return json.loads(kubectl("get", *what, "-o", "json", namespace=namespace).stdout)


def pods(namespace: str, app: str) -> list[dict[str, Any]]:
    return list(get(namespace, "pods", "-l", f"app={app}")["items"])


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 180, every: float = 1.0) -> T:
    """Poll `probe` until it returns something true (a non-empty list, True, a name); fail saying `what` did not
    happen."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


def ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def kubeconfig_for_service_account(namespace: str, account: str, rules: list[dict[str, Any]],
                                   directory: Path) -> str:
    """A kubeconfig (a file in `directory`) for a new ServiceAccount of `namespace` whose only rights are a Role
    of `rules` there: a namespace-scoped identity, like the one k8s/base/rbac.yaml gives the operators. The API
    server's address and CA are the somabrain-local context's."""
    apply(namespace,
          {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}},
          {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": account},
           "rules": rules},
          {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": account},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
           "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]})
    return str(service_account_kubeconfig(namespace, account, directory))

