"""A FAKE Kubernetes API (not a cluster): an HTTP server on 127.0.0.1 that serves the real JSON shapes of
GET /api/v1/namespaces/NS/pods (PodList) and GET /apis/metrics.k8s.io/v1beta1/namespaces/NS/pods
(PodMetricsList), for testing load/samplers/kube_metrics.py. No cluster can run on this machine.

Shapes follow Kubernetes 1.30 and metrics-server 0.7: quantities as strings ("123456789n", "150532Ki"),
RFC 3339 timestamps, containerStatuses with restartCount and lastState.terminated.reason.

    with KubeFake() as fake:
        fake.add_pod("somabrain-7d9f-abcde", app="somabrain", limits={"cpu": "1200m", "memory": "2Gi"})
        fake.set_usage("somabrain-7d9f-abcde", cpu="350000000n", memory="524288Ki")
        KubeSampler("somabrain-prod", kubeconfig=str(fake.kubeconfig(tmp_path)))
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

NAMESPACE = "somabrain-prod"
TOKEN = "fake-token"  # the fake checks that the client sends the kubeconfig's bearer token


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeFake:
    def __init__(self, namespace: str = NAMESPACE) -> None:
        self.namespace = namespace
        self.pods: dict[str, dict[str, Any]] = {}
        self.metrics: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []
        self.serve_metrics = True
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake.requests.append(self.path)
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._send(401, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                            "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
                path = self.path.split("?")[0]
                if path == f"/api/v1/namespaces/{fake.namespace}/pods":
                    return self._send(200, fake.pod_list())
                if path == f"/apis/metrics.k8s.io/v1beta1/namespaces/{fake.namespace}/pods" and fake.serve_metrics:
                    return self._send(200, fake.metrics_list())
                return self._send(404, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                        "message": "the server could not find the requested resource",
                                        "reason": "NotFound", "details": {}, "code": 404})

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> KubeFake:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": TOKEN}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": self.namespace}}],
        }))
        return path

    # -- state -----------------------------------------------------------------------------------------
    def add_pod(self, name: str, *, app: str, limits: dict[str, str] | None, container: str | None = None,
                started: float = 1_790_000_000.0) -> None:
        container = container or app
        resources: dict[str, Any] = {"requests": {"cpu": "100m", "memory": "128Mi"}}
        if limits is not None:
            resources["limits"] = limits
        with self._lock:
            self.pods[name] = {
                "metadata": {"name": name, "generateName": name.rsplit("-", 1)[0] + "-", "namespace": self.namespace,
                             "uid": f"uid-{name}", "resourceVersion": "1",
                             "creationTimestamp": rfc3339(started),
                             "labels": {"app": app, "app.kubernetes.io/part-of": "somabrain",
                                        "pod-template-hash": "7d9f"},
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                  "name": name.rsplit("-", 1)[0], "uid": "rs", "controller": True,
                                                  "blockOwnerDeletion": True}]},
                "spec": {"containers": [{"name": container, "image": f"{app}:local", "resources": resources,
                                         "imagePullPolicy": "IfNotPresent"}],
                         "restartPolicy": "Always", "nodeName": "kind-control-plane"},
                "status": {"phase": "Running", "podIP": "10.244.0.12", "startTime": rfc3339(started),
                           "conditions": [{"type": "Ready", "status": "True"}],
                           "containerStatuses": [{"name": container, "ready": True, "restartCount": 0,
                                                  "image": f"{app}:local", "imageID": "", "started": True,
                                                  "state": {"running": {"startedAt": rfc3339(started)}},
                                                  "lastState": {}}]},
            }

    def set_usage(self, pod: str, *, cpu: str, memory: str, timestamp: float, window: str = "15s") -> None:
        container = self.pods[pod]["spec"]["containers"][0]["name"]
        with self._lock:
            self.metrics[pod] = {
                "metadata": {"name": pod, "namespace": self.namespace, "creationTimestamp": rfc3339(timestamp),
                             "labels": self.pods[pod]["metadata"]["labels"]},
                "timestamp": rfc3339(timestamp), "window": window,
                "containers": [{"name": container, "usage": {"cpu": cpu, "memory": memory}}],
            }

    def oom_restart(self, pod: str, finished: float) -> None:
        """The container was OOM-killed at `finished` and restarted, as the kubelet reports it."""
        with self._lock:
            status = self.pods[pod]["status"]["containerStatuses"][0]
            status["restartCount"] += 1
            status["lastState"] = {"terminated": {"exitCode": 137, "reason": "OOMKilled",
                                                  "startedAt": rfc3339(finished - 60), "finishedAt": rfc3339(finished),
                                                  "containerID": "containerd://abc"}}
            status["state"] = {"running": {"startedAt": rfc3339(finished + 1)}}

    def pod_list(self) -> dict[str, Any]:
        with self._lock:
            return {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "12345"},
                    "items": json.loads(json.dumps(list(self.pods.values())))}

    def metrics_list(self) -> dict[str, Any]:
        with self._lock:
            return {"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1",
                    "metadata": {"selfLink": f"/apis/metrics.k8s.io/v1beta1/namespaces/{self.namespace}/pods"},
                    "items": json.loads(json.dumps(list(self.metrics.values())))}
