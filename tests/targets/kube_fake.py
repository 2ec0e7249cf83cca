"""THE one fake of the Kubernetes API in this tree (tests/targets/kube_fake.py), and why it is still here.

Every other test of the code that talks to Kubernetes (targets.kube, load.samplers.kube_metrics, ops
doctor/rollout) runs against the real local cluster, in the cluster tier (tests/cluster/, `make cluster-test`).
This fake stays for fast unit tests of the error paths a real cluster cannot be made to produce on demand: a 409
Conflict race (another writer changing an object between an operator tool's read and its write, an API server
answering 409 on every attempt), an API error at one precise step of a multi-step operation. Do not add a test of
a success path here: show it on the cluster (tests/cluster/). A test that uses it says in its docstring which
error path it stands in for.

It is a plain HTTP server answering the API paths the tools use with the API's JSON shapes, built from the
project's own k8s/ manifests (rendered by conformance.loaders). It is not a cluster: no scheduling, no watches, no
NetworkPolicy enforcement, and it proves nothing about a real API server beyond the documented semantics it copies.

- GET of Deployments/StatefulSets, Services, NetworkPolicies, Ingress, ConfigMaps, Secrets (the rendered objects),
  plus (from_k8s_dir) the Secrets k8s/ refers to but does not ship, as scripts/k8s_secrets.sh creates them;
  ReplicaSets (none: KubeTarget then takes every pod as current); Namespaces (somabrain-prod);
- Pods: one per replica of each workload, from its pod template, Running and Ready, with podIPs; Endpoints: one
  per Service with a selector, listing the Ready pods it selects;
- pod `exec`: the websocket upgrade with the v4.channel.k8s.io subprotocol (stdout 1, stderr 2, status 3), what
  kubernetes.stream speaks; the command runs through `exec_handler(pod, command)` (default: a local process, so
  the probe script really runs);
- PUT /apis/apps/v1/.../deployments/NAME: a changed pod template bumps `generation` and "rolls": pods of an image
  listed in `bad_images` stay Pending in ImagePullBackOff next to the old pods (maxUnavailable 0), any other image
  replaces the old pods with Ready ones; `status` is what the Deployment controller would report;
- PUT /api/v1/.../secrets/NAME: stored as sent; PATCH of a Deployment: the strategic merge `kubectl set image`
  sends (tests/ops/test_rotate_kube.py serves rotate's other PATCHes, with 409 answers on demand);
- `network_exec`: runs the probe script on this host after mapping cluster DNS names to the local servers a test
  started (`routes`: service key -> 127.0.0.1 port), and the API's own 127.0.0.1:9696 to a health server chosen
  by the pod's image (`health_for`).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from conformance.expectations import OPERATOR_SECRETS
from conformance.inventory import API, CLUSTER_DOMAIN, NAMESPACE, by_k8s_service
from conformance.loaders.kustomize import render
from conformance.netpol import selector_matches

Resource = dict[str, Any]
ExecHandler = Callable[[Resource, list[str]], tuple[int, bytes, bytes]]
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CORE = {"pods": "Pod", "services": "Service", "endpoints": "Endpoints", "secrets": "Secret",
        "configmaps": "ConfigMap"}
GROUPS = {
    # ReplicaSets: none are stored, so KubeTarget sees no revision and takes every pod as current
    "apps/v1": {"deployments": "Deployment", "statefulsets": "StatefulSet", "replicasets": "ReplicaSet"},
    "networking.k8s.io/v1": {"networkpolicies": "NetworkPolicy", "ingresses": "Ingress"},
}


# What scripts/k8s_secrets.sh puts into the Secrets it creates (k8s/ ships none), with fake values.
OPERATOR_SECRET_VALUES: dict[str, dict[str, str]] = {
    "somabrain-postgres": {"POSTGRES_USER": "somabrain", "POSTGRES_PASSWORD": "fake-cluster-only",
                           "POSTGRES_DB": "somabrain"},
    "somabrain-postgres-app": {"POSTGRES_USER": "somabrain_app", "POSTGRES_PASSWORD": "fake-cluster-only-app",
                               "POSTGRES_DB": "somabrain"},
    "somabrain-secrets": {"jwt_pub.pem": "-----BEGIN PUBLIC KEY-----\nfake-cluster-only\n-----END PUBLIC KEY-----\n"},
    "somabrain-memory-token": {"token": "fake-cluster-only-" + "0" * 32},
}
assert {k: tuple(v) for k, v in OPERATOR_SECRET_VALUES.items()} == dict(OPERATOR_SECRETS)


def operator_secrets(namespace: str = NAMESPACE) -> list[Resource]:
    """The Secrets an operator creates before the first deploy (scripts/k8s_secrets.sh), as the API returns them."""
    return [
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "somabrain"}},
         "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}}
        for name, values in OPERATOR_SECRET_VALUES.items()
    ]


def local_exec(pod: Resource, command: list[str]) -> tuple[int, bytes, bytes]:
    """Run the exec'd command on this host (python3 -> this interpreter)."""
    argv = [sys.executable if command[0] == "python3" else command[0], *command[1:]]
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    except FileNotFoundError as exc:
        return 127, b"", f"exec: {exc}".encode()
    return proc.returncode, proc.stdout, proc.stderr


class FakeCluster:
    def __init__(self, resources: Iterable[Resource], namespace: str = NAMESPACE,
                 exec_handler: ExecHandler = local_exec) -> None:
        self.namespace = namespace
        self.exec_handler = exec_handler
        self.objects: list[Resource] = [copy.deepcopy(r) for r in resources if r.get("kind") != "Namespace"]
        self.namespaces = {namespace: {"kubernetes.io/metadata.name": namespace}}
        self._build_pods()
        self._build_endpoints()
        self._server: ThreadingHTTPServer | None = None

    @classmethod
    def from_k8s_dir(cls, directory: Path, *, with_operator_secrets: bool = True, **kwargs: Any) -> FakeCluster:
        """The rendered manifests of `directory`; with_operator_secrets: plus the Secrets the manifests refer to
        but do not contain, as a cluster has them once scripts/k8s_secrets.sh ran (k8s/README.md)."""
        resources = render(directory).resources
        if with_operator_secrets:
            shipped = {(r["kind"], r["metadata"]["name"]) for r in resources}
            resources += [s for s in operator_secrets() if ("Secret", s["metadata"]["name"]) not in shipped]
        return cls(resources, **kwargs)

    # -- object model --------------------------------------------------------------------------------
    def add(self, resource: Resource) -> None:
        resource = copy.deepcopy(resource)
        resource.setdefault("metadata", {}).setdefault("namespace", self.namespace)
        self.objects = [o for o in self.objects if _key(o) != _key(resource)] + [resource]

    def _build_pods(self) -> None:
        index = 10
        for workload in [o for o in self.objects if o["kind"] in ("Deployment", "StatefulSet")]:
            name = workload["metadata"]["name"]
            template = workload["spec"]["template"]
            for replica in range(int(workload["spec"].get("replicas", 1))):
                index += 1
                suffix = str(replica) if workload["kind"] == "StatefulSet" else f"7d9f8c6b5-{replica:05d}"
                self.objects.append({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": f"{name}-{suffix}", "namespace": self.namespace,
                                 "labels": dict(template["metadata"].get("labels") or {}),
                                 "ownerReferences": [{"kind": workload["kind"], "name": name}]},
                    "spec": copy.deepcopy(template["spec"]),
                    "status": {"phase": "Running", "podIP": f"10.244.0.{index}",
                               "conditions": [{"type": "Ready", "status": "True"}]},
                })

    def _build_endpoints(self) -> None:
        for svc in [o for o in self.objects if o["kind"] == "Service"]:
            selector = svc["spec"].get("selector")
            if not selector:
                continue
            pods = [p for p in self.objects if p["kind"] == "Pod"
                    and selector_matches({"matchLabels": selector}, p["metadata"]["labels"])]
            ready = [p for p in pods if p["status"]["conditions"][0]["status"] == "True"]
            subsets = []
            if ready:
                subsets = [{"addresses": [{"ip": p["status"]["podIP"], "targetRef": {"kind": "Pod",
                            "name": p["metadata"]["name"]}} for p in ready],
                            "ports": [{"name": p.get("name"), "port": p["port"], "protocol": p.get("protocol", "TCP")}
                                      for p in svc["spec"].get("ports") or []]}]
            self.objects.append({"apiVersion": "v1", "kind": "Endpoints",
                                 "metadata": {"name": svc["metadata"]["name"], "namespace": self.namespace},
                                 "subsets": subsets})

    def find(self, kind: str, namespace: str, name: str | None = None, selector: str | None = None) -> Any:
        items = [o for o in self.objects if o["kind"] == kind
                 and o["metadata"].get("namespace", self.namespace) == namespace]
        if selector:
            wanted = dict(part.split("=", 1) for part in selector.split(",") if part)
            items = [o for o in items if wanted.items() <= (o["metadata"].get("labels") or {}).items()]
        if name is not None:
            return next((o for o in items if o["metadata"]["name"] == name), None)
        return items

    # -- server --------------------------------------------------------------------------------------
    def handler_class(self) -> type[_Handler]:
        """The request handler this fake serves with (the writable one adds PUT/PATCH and a controller)."""
        return _Handler

    def start(self) -> str:
        cluster = self

        class Handler(self.handler_class()):  # type: ignore[misc]
            fake = cluster

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def kubeconfig(self, path: Path, url: str, context: str = "fake") -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": context,
            "clusters": [{"name": "fake", "cluster": {"server": url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": context, "context": {"cluster": "fake", "user": "fake",
                                                       "namespace": self.namespace}}],
        }), encoding="utf-8")
        return path


def _key(o: Resource) -> tuple[str, str, str]:
    return o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]


def _status(code: int, reason: str, message: str) -> Resource:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeCluster

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        parts = [p for p in url.path.split("/") if p]
        fake = self.fake
        if parts == ["version"]:
            return self._json(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0-fake"})
        if parts[:2] == ["api", "v1"]:
            group, rest, kinds = "v1", parts[2:], CORE
        elif parts[:1] == ["apis"] and "/".join(parts[1:3]) in GROUPS:
            group, rest, kinds = "/".join(parts[1:3]), parts[3:], GROUPS["/".join(parts[1:3])]
        else:
            return self._json(404, _status(404, "NotFound", f"the server could not find {url.path}"))
        if rest[:1] != ["namespaces"] or len(rest) < 2:
            return self._json(404, _status(404, "NotFound", f"unsupported path {url.path}"))
        namespace = rest[1]
        if len(rest) == 2:
            if group != "v1" or namespace not in fake.namespaces:
                return self._json(404, _status(404, "NotFound", f'namespaces "{namespace}" not found'))
            return self._json(200, {"apiVersion": "v1", "kind": "Namespace",
                                    "metadata": {"name": namespace, "labels": fake.namespaces[namespace]}})
        plural = rest[2]
        kind = kinds.get(plural)
        if kind is None:
            return self._json(404, _status(404, "NotFound", f"unknown resource {plural}"))
        if len(rest) == 5 and plural == "pods" and rest[4] == "exec":
            return self._exec(namespace, rest[3], query.get("command") or [])
        if len(rest) == 3:
            items = fake.find(kind, namespace, selector=next(iter(query.get("labelSelector") or []), None))
            # As the real API: a list names its kind once, its items carry no kind or apiVersion.
            items = [{k: v for k, v in item.items() if k not in ("kind", "apiVersion")} for item in items]
            return self._json(200, {"apiVersion": group, "kind": f"{kind}List", "metadata": {}, "items": items})
        found = fake.find(kind, namespace, rest[3])
        if found is None:
            return self._json(404, _status(404, "NotFound", f'{plural} "{rest[3]}" not found'))
        return self._json(200, _wire(found))

    # pod exec over a websocket, v4.channel.k8s.io
    def _exec(self, namespace: str, name: str, command: list[str]) -> None:
        pod = self.fake.find("Pod", namespace, name)
        if pod is None:
            return self._json(404, _status(404, "NotFound", f'pods "{name}" not found'))
        key = self.headers.get("Sec-WebSocket-Key")
        if self.headers.get("Upgrade", "").lower() != "websocket" or not key:
            return self._json(400, _status(400, "BadRequest", "exec needs a websocket upgrade"))
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()  # noqa: S324 - RFC 6455
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
        self.end_headers()
        code, stdout, stderr = self.fake.exec_handler(pod, command)
        if stdout:
            self._frame(b"\x01" + stdout)
        if stderr:
            self._frame(b"\x02" + stderr)
        status: Resource = {"metadata": {}, "status": "Success"}
        if code != 0:
            status = {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                      "message": f"command terminated with non-zero exit code: {code}",
                      "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}
        self._frame(b"\x03" + json.dumps(status).encode())
        self._frame((1000).to_bytes(2, "big"), opcode=0x8)
        self.close_connection = True

    def _frame(self, payload: bytes, opcode: int = 0x2) -> None:
        size = len(payload)
        if size < 126:
            header = bytes([0x80 | opcode, size])
        elif size < 1 << 16:
            header = bytes([0x80 | opcode, 126]) + size.to_bytes(2, "big")
        else:
            header = bytes([0x80 | opcode, 127]) + size.to_bytes(8, "big")
        self.wfile.write(header + payload)
        self.wfile.flush()


def _wire(obj: Resource) -> Resource:
    """Secrets as the API serves them: stringData folded into base64 `data`."""
    if obj["kind"] != "Secret" or "stringData" not in obj:
        return obj
    out = copy.deepcopy(obj)
    data = out.setdefault("data", {}) or {}
    for key, value in out.pop("stringData").items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    out["data"] = data
    return out


class WritableCluster(FakeCluster):
    def handler_class(self) -> type[_Handler]:
        return _WritableHandler

    def __init__(self, *args: Any, bad_images: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bad_images = set(bad_images)
        self.puts: list[str] = []
        self._serial = 100

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
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.port = self._server.server_address[1]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def network_exec(routes: dict[str, int], health: HealthServer,
                 health_for: Callable[[Resource], str]) -> Callable[[Resource, list[str]], tuple[int, bytes, bytes]]:
    """An exec handler: cluster names -> 127.0.0.1 ports of `routes`, the API's own port -> the health server."""
    suffix = f".{NAMESPACE}.{CLUSTER_DOMAIN}"

    def local_host(host: str) -> tuple[str, int | None, str]:
        if host.endswith(suffix):
            svc = by_k8s_service(host[: -len(suffix)])
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
                if url.hostname == "127.0.0.1" and url.port == API.port:
                    probe["url"] = f"http://127.0.0.1:{health.port}/{variant}{url.path}"
                elif host == "127.0.0.1":
                    probe["url"] = f"http://127.0.0.1:{health.port}/{key}{url.path}"
                elif host == "name.invalid":
                    probe["url"] = f"http://name.invalid{url.path}"
        return local_exec(pod, [*command[:3], json.dumps(probes)])

    return handler
