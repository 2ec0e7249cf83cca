"""The conformance Kubernetes API fake (tests/conformance/k8s_fake), extended for the operator tools: PUT of
Deployments and Secrets, a tiny deployment controller, and an exec handler that plays the cluster network.

Still a fake, not a cluster. What it adds:
- PUT /apis/apps/v1/.../deployments/NAME: a changed pod template bumps `generation` and "rolls": pods of an image
  listed in `bad_images` stay Pending in ImagePullBackOff next to the old pods (maxUnavailable 0), any other image
  replaces the old pods with Ready ones; `status` is what the Deployment controller would report.
- PUT /api/v1/.../secrets/NAME: stored as sent.
- `network_exec`: runs the probe script on this host (as the base fake does) after mapping cluster DNS names to the
  local servers a test started (`routes`: service key -> 127.0.0.1 port), and the API's own 127.0.0.1:9696 to a
  health server chosen by the pod's image (`health_for`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from conformance.expectations import BY_KEY, CLUSTER_DOMAIN
from tests.conformance.k8s_fake import FakeCluster, local_exec
from tests.conformance.k8s_fake.server import _Handler, _status

Resource = dict[str, Any]


class WritableCluster(FakeCluster):
    def __init__(self, *args: Any, bad_images: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bad_images = set(bad_images)
        self.puts: list[str] = []
        self._serial = 100

    def start(self) -> str:
        cluster = self

        class Handler(_WritableHandler):
            fake = cluster

        import threading

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- the controller ------------------------------------------------------------------------------
    def replace(self, kind: str, namespace: str, name: str, body: Resource) -> Resource:
        old = self.find(kind, namespace, name)
        if old is None:
            raise KeyError(name)
        body = copy.deepcopy(body)
        body.setdefault("metadata", {})["namespace"] = namespace
        if kind == "Deployment":
            generation = int(old["metadata"].get("generation", 1))
            if body["spec"]["template"] != old["spec"]["template"]:
                generation += 1
                self._roll(old, body)
            body["metadata"]["generation"] = generation
            body["status"] = self._status(body, generation)
        self.add(body)
        self.puts.append(f"{kind}/{name}")
        return body

    def _owned(self, name: str) -> list[Resource]:
        return [p for p in self.objects if p["kind"] == "Pod"
                and any(o.get("name") == name for o in p["metadata"].get("ownerReferences") or [])]

    def _roll(self, old: Resource, new: Resource) -> None:
        name = new["metadata"]["name"]
        image = new["spec"]["template"]["spec"]["containers"][0]["image"]
        bad = image in self.bad_images
        current = self._owned(name)
        # A bad image never replaces anything (maxUnavailable 0); a good one replaces every pod, bad ones too.
        keep = [p for p in current if p["status"]["phase"] == "Running"] if bad else []
        self.objects = [o for o in self.objects if o not in current or o in keep]
        for replica in range(int(new["spec"].get("replicas", 1))):
            self._serial += 1
            pod: Resource = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"{name}-{self._serial:05d}-{replica}", "namespace": self.namespace,
                             "labels": dict(new["spec"]["template"]["metadata"].get("labels") or {}),
                             "ownerReferences": [{"kind": "Deployment", "name": name}]},
                "spec": copy.deepcopy(new["spec"]["template"]["spec"]),
                "status": {"phase": "Pending" if bad else "Running", "podIP": f"10.244.1.{self._serial % 250}",
                           "conditions": [{"type": "Ready", "status": "False" if bad else "True"}]},
            }
            if bad:
                pod["status"]["containerStatuses"] = [{"name": "c", "ready": False, "state": {"waiting": {
                    "reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}}}]
            # the new pods come first in the list, as a fresh pod would not; KubeTarget probes the first Running
            self.objects.insert(0, pod)
        self.objects = [o for o in self.objects if o["kind"] != "Endpoints"]
        self._build_endpoints()

    def _status(self, deployment: Resource, generation: int) -> Resource:
        name = deployment["metadata"]["name"]
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        pods = self._owned(name)
        updated = [p for p in pods if p["spec"]["containers"][0]["image"] == image]
        ready = [p for p in pods if p["status"]["conditions"][0]["status"] == "True"]
        return {"observedGeneration": generation, "replicas": len(pods), "updatedReplicas": len(updated),
                "readyReplicas": len(ready), "availableReplicas": len([p for p in updated if p in ready]),
                "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]}


class _WritableHandler(_Handler):
    fake: WritableCluster

    def do_PUT(self) -> None:
        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        kinds = {("apis", "deployments"): "Deployment", ("api", "secrets"): "Secret"}
        kind = kinds.get((parts[0], parts[-2])) if len(parts) >= 6 else None
        if kind is None or "namespaces" not in parts:
            return self._json(405, _status(405, "MethodNotAllowed", f"PUT {self.path} is not faked"))
        namespace = parts[parts.index("namespaces") + 1]
        try:
            stored = self.fake.replace(kind, namespace, parts[-1], body)
        except KeyError:
            return self._json(404, _status(404, "NotFound", f"{parts[-2]} {parts[-1]!r} not found"))
        return self._json(200, stored)


    def do_PATCH(self) -> None:
        """Strategic merge, the part `kubectl set image` uses: annotations, and containers merged by name."""
        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        if self.headers.get("Content-Type") != "application/strategic-merge-patch+json" or "deployments" not in parts:
            return self._json(415, _status(415, "UnsupportedMediaType", f"PATCH {self.path} is not faked"))
        changes = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        namespace = parts[parts.index("namespaces") + 1]
        old = self.fake.find("Deployment", namespace, parts[-1])
        if old is None:
            return self._json(404, _status(404, "NotFound", f"deployments {parts[-1]!r} not found"))
        body = copy.deepcopy(old)
        body["metadata"].setdefault("annotations", {}).update(changes.get("metadata", {}).get("annotations", {}))
        by_name = {c["name"]: c for c in body["spec"]["template"]["spec"]["containers"]}
        for change in changes.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            by_name[change["name"]].update(change)
        return self._json(200, self.fake.replace("Deployment", namespace, parts[-1], body))


class HealthServer:
    """Serves canned API/SomaMemory/OPA answers on 127.0.0.1 under /<variant>/... (the in-pod views)."""

    def __init__(self, documents: dict[str, dict[str, Any]]) -> None:
        self.documents = documents
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                variant, _, rest = self.path.lstrip("/").partition("/")
                doc = server.documents.get(variant)
                if doc is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                ready = bool(doc.get("ready", True))
                code, body = (200 if ready else 503, b"{}") if rest == "readyz" else (200, json.dumps(doc).encode())
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        import threading

        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.port = self._server.server_address[1]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def network_exec(routes: dict[str, int], health: HealthServer,
                 health_for: Callable[[Resource], str]) -> Callable[[Resource, list[str]], tuple[int, bytes, bytes]]:
    """An exec handler: cluster names -> 127.0.0.1 ports of `routes`, 127.0.0.1:9696 -> the health server."""
    suffix = f".somabrain-prod.{CLUSTER_DOMAIN}"

    def local_host(host: str) -> tuple[str, int | None, str]:
        if host.endswith(suffix):
            svc = next((s for s in BY_KEY.values() if s.prod_name == host[: -len(suffix)]), None)
            if svc is not None and svc.key in routes:
                return "127.0.0.1", routes[svc.key], svc.key
            return "name.invalid", None, ""
        return host, None, ""

    def handler(pod: Resource, command: list[str]) -> tuple[int, bytes, bytes]:
        if command[:2] != ["python3", "-c"] or len(command) != 4:
            return local_exec(pod, command)
        probes = json.loads(command[3])
        variant = health_for(pod)
        for probe in probes:
            if probe["op"] == "resolve":
                host, _, _ = local_host(probe["name"])
                probe["name"] = "localhost" if host == "127.0.0.1" else host
            elif probe["op"] == "tcp":
                host, port, _ = local_host(probe["host"])
                probe["host"], probe["port"] = host, port or probe["port"]
            elif probe["op"] == "http":
                url = urlsplit(probe["url"])
                host, port, key = local_host(url.hostname or "")
                if url.hostname == "127.0.0.1" and url.port == 9696:
                    probe["url"] = f"http://127.0.0.1:{health.port}/{variant}{url.path}"
                elif host == "127.0.0.1":
                    probe["url"] = f"http://127.0.0.1:{health.port}/{key}{url.path}"
                elif host == "name.invalid":
                    probe["url"] = f"http://name.invalid{url.path}"
        return local_exec(pod, [*command[:3], json.dumps(probes)])

    return handler
