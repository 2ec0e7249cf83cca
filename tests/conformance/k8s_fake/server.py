"""The fake API server itself (see the package docstring: it is a fake, and why)."""

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

from conformance.expectations import NAMESPACE, OPERATOR_SECRETS
from conformance.loaders.kustomize import render
from conformance.netpol import selector_matches

Resource = dict[str, Any]
ExecHandler = Callable[[Resource, list[str]], tuple[int, bytes, bytes]]
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CORE = {"pods": "Pod", "services": "Service", "endpoints": "Endpoints", "secrets": "Secret",
        "configmaps": "ConfigMap"}
GROUPS = {
    "apps/v1": {"deployments": "Deployment", "statefulsets": "StatefulSet"},
    "networking.k8s.io/v1": {"networkpolicies": "NetworkPolicy", "ingresses": "Ingress"},
}


# What scripts/k8s_secrets.sh puts into the Secrets it creates (k8s/ ships none), with fake values.
OPERATOR_SECRET_VALUES: dict[str, dict[str, str]] = {
    "somabrain-postgres": {"POSTGRES_USER": "somabrain", "POSTGRES_PASSWORD": "fake-cluster-only",
                           "POSTGRES_DB": "somabrain"},
    "somabrain-secrets": {"jwt_pub.pem": "-----BEGIN PUBLIC KEY-----\nfake-cluster-only\n-----END PUBLIC KEY-----\n"},
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
    def __init__(self, resources: Iterable[Resource], namespace: str = "somabrain-prod",
                 exec_handler: ExecHandler = local_exec, unready: Iterable[str] = ()) -> None:
        self.namespace = namespace
        self.exec_handler = exec_handler
        self.objects: list[Resource] = [copy.deepcopy(r) for r in resources if r.get("kind") != "Namespace"]
        self.namespaces = {namespace: {"kubernetes.io/metadata.name": namespace}}
        self.unready = set(unready)
        self.exec_log: list[tuple[str, list[str]]] = []
        self._build_pods()
        self._build_endpoints()
        self._server: ThreadingHTTPServer | None = None

    @classmethod
    def from_k8s_dir(cls, directory: Path, *, with_operator_secrets: bool = True, **kwargs: Any) -> FakeCluster:
        """The rendered manifests of `directory`; with_operator_secrets: plus the Secrets the manifests refer to
        but do not contain, as a cluster has them once scripts/k8s_secrets.sh ran (k8s/README.md)."""
        resources = render(directory)
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
            ready = name not in self.unready
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
                               "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
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
    def start(self) -> str:
        cluster = self

        class Handler(_Handler):
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
            items = fake.find(kind, namespace, selector=(query.get("labelSelector") or [None])[0])
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
        self.fake.exec_log.append((name, command))
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
