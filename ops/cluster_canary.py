"""Prove that a Kubernetes cluster is real: DNS, Services, NetworkPolicy enforcement, registry images, TLS ingress.

`python -m ops.cluster_canary [--context C | --kubeconfig F] --image REF` runs these checks in a throw-away
namespace (somabrain-canary) and exits 0 only when every one passed; `make cluster` runs it last.

1. an image from the local registry runs as pods (a server `echo` behind a Service, and a `client`);
   a PersistentVolumeClaim of the default StorageClass binds, and a pod writes to it;
2. the client resolves the Service's name through the cluster DNS, to the Service's ClusterIP;
3. the client reaches the server through the Service;
4. `https://somabrain.internal:9999/somabrain-canary/` answers through the ingress controller (IngressClass
   nginx), with the certificate from scripts/setup_ingress_tls.sh, from 127.0.0.1 (a path of its own, so the
   canary and a deployed SomaBrain, whose Ingress has `/` of the same host, can share the ingress);
5. after a default-deny NetworkPolicy the same connection fails, while the server is still Ready;
6. once a policy allows the client, the connection works again.

In step 5 only a timeout counts as the policy at work: the packet was dropped. "Connection refused" means a TCP
reset, so something answered and nothing was enforced; an unresolved name or any other error is inconclusive. Both
fail the check. (Our local cluster's controller, kube-router, rejects with ICMP port-unreachable; scripts/cluster/
net.sh drops that ICMP on its way to the pod, so denials time out there as under kindnet, Calico or Cilium.) What
makes it proof is the sequence ok -> timeout -> ok with nothing changed but the policy, and the server staying
Ready throughout.
"""

from __future__ import annotations

import argparse
import functools
import json
import socket
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

NAMESPACE = "somabrain-canary"
HOST = "somabrain.internal"
INGRESS_PATH = "/somabrain-canary/"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_TLS_DIR = REPO / "infra" / "tls"

# Runs inside the client pod with the image's python3 (stdlib only).
PROBE = r"""
import json, socket, sys
req = json.loads(sys.argv[1])
out = {}
if req["op"] == "resolve":
    try:
        out["addrs"] = sorted({a[4][0] for a in socket.getaddrinfo(req["host"], None, socket.AF_INET)})
    except socket.gaierror as exc:
        out["error"] = "does not resolve: %s" % exc
else:
    s = socket.socket()
    s.settimeout(req["timeout"])
    try:
        s.connect((req["host"], req["port"]))
        s.sendall(b"GET / HTTP/1.0\r\nHost: canary\r\n\r\n")
        out["result"], out["body"] = "ok", s.recv(4096).decode("utf-8", "replace")
    except socket.timeout:
        out["result"] = "timeout"
    except ConnectionRefusedError:
        out["result"] = "refused"
    except OSError as exc:
        out["result"], out["error"] = "error", str(exc)
print(json.dumps(out))
"""

# The server: answers every GET with one known line.
SERVER = r"""
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"somabrain-canary ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""
MARKER = "somabrain-canary ok"


def https_get(address: tuple[str, int], path: str, ca: Path, host: str = HOST) -> tuple[str, str, bytes]:
    """GET https://HOST{path} from `address` (SNI and Host: host, verified against `ca`):
    (status line, body, the server's certificate in DER)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(address, timeout=10) as raw, ctx.wrap_socket(raw, server_hostname=host) as s:
        peer = s.getpeercert(binary_form=True) or b""
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.decode("utf-8", "replace").partition("\r\n\r\n")
    return head.split("\r\n", 1)[0], body, peer


class CanaryFailed(Exception):
    """A check failed; the message says which and what was seen."""


def _say(line: str) -> None:
    print(f"[canary] {line}", flush=True)


def _poll(what: str, timeout: float, attempt: Callable[[], Any]) -> Any:
    """Call attempt() until it returns a truthy value; raise CanaryFailed naming what, with the last answer."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = attempt()
            if last and not isinstance(last, Exception):
                return last
        except CanaryFailed:
            raise
        except Exception as exc:  # the last error is the useful message when time runs out
            last = exc
        if time.monotonic() > deadline:
            raise CanaryFailed(f"{what}: not within {timeout:.0f}s (last: {last})")
        time.sleep(1)


class Canary:
    def __init__(self, api: Any, image: str, tls_dir: Path, ingress: tuple[str, int], timeout: float) -> None:
        from kubernetes import client

        # Typed as Any: the client takes the API's own JSON (dicts) as bodies, which its annotations do not say.
        self.core: Any = client.CoreV1Api(api)
        self.net: Any = client.NetworkingV1Api(api)
        self.image = image
        self.tls_dir = tls_dir
        self.ingress = ingress
        self.timeout = timeout

    # -- set-up ---------------------------------------------------------------------------------------------
    def fresh_namespace(self) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.delete_namespace(NAMESPACE)
            _say(f"removing the namespace {NAMESPACE} left by an earlier run")
        except ApiException as exc:
            if exc.status != 404:
                raise
        _poll(f"namespace {NAMESPACE} gone", 120, lambda: not self._namespace_exists())
        self.core.create_namespace({"metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/part-of": "canary"}}})

    def _namespace_exists(self) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self.core.read_namespace(NAMESPACE)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def delete_namespace(self) -> None:
        self.core.delete_namespace(NAMESPACE)

    def _container(self, name: str, command: list[str]) -> dict[str, Any]:
        return {
            "name": name, "image": self.image, "imagePullPolicy": "Always", "command": command,
            "securityContext": {"runAsUser": 65532, "runAsNonRoot": True, "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
            "resources": {"requests": {"cpu": "10m", "memory": "24Mi"}, "limits": {"memory": "64Mi"}},
        }

    def deploy(self) -> None:
        server = self._container("echo", ["python3", "-c", SERVER])
        server["ports"] = [{"containerPort": 8080, "name": "http"}]
        server["readinessProbe"] = {"tcpSocket": {"port": 8080}, "periodSeconds": 2}
        self.core.create_namespaced_pod(NAMESPACE, {
            "metadata": {"name": "echo", "labels": {"app": "echo"}},
            "spec": {"containers": [server], "terminationGracePeriodSeconds": 1}})
        self.core.create_namespaced_service(NAMESPACE, {
            "metadata": {"name": "echo"},
            "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": 8080, "name": "http"}]}})
        self.core.create_namespaced_pod(NAMESPACE, {
            "metadata": {"name": "client", "labels": {"app": "client"}},
            "spec": {"containers": [self._container("client", ["python3", "-c", "import time; time.sleep(86400)"])],
                     "terminationGracePeriodSeconds": 1}})

    def _ready(self, name: str) -> bool:
        pod = self.core.read_namespaced_pod(name, NAMESPACE)
        for cs in pod.status.container_statuses or []:
            waiting = cs.state.waiting if cs.state else None
            if waiting and waiting.reason in ("ErrImagePull", "ImagePullBackOff", "CrashLoopBackOff",
                                              "CreateContainerError", "InvalidImageName"):
                raise CanaryFailed(f"pod {name}: {waiting.reason}: {waiting.message}")
        return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])

    # -- probes ---------------------------------------------------------------------------------------------
    def probe(self, request: dict[str, Any]) -> dict[str, Any]:
        from kubernetes.stream import stream

        resp = stream(self.core.connect_get_namespaced_pod_exec, "client", NAMESPACE,
                      command=["python3", "-c", PROBE, json.dumps(request)],
                      stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
        resp.run_forever(timeout=30)
        out, err = resp.read_stdout(), resp.read_stderr()
        resp.close()
        if resp.returncode != 0:
            raise CanaryFailed(f"the probe in pod client exited {resp.returncode}: {err.strip()[-300:]}")
        return dict(json.loads(out.strip().splitlines()[-1]))

    def connect(self, ip: str, timeout: float = 3.0) -> dict[str, Any]:
        return self.probe({"op": "connect", "host": ip, "port": 80, "timeout": timeout})

    # -- the checks -----------------------------------------------------------------------------------------
    def check_registry_image(self) -> str:
        for name in ("echo", "client"):
            _poll(f"pod {name} Ready (image {self.image})", self.timeout, functools.partial(self._ready, name))
        pod = self.core.read_namespaced_pod("echo", NAMESPACE)
        image_id = pod.status.container_statuses[0].image_id
        registry = self.image.split("/", 1)[0]
        if registry not in image_id:
            raise CanaryFailed(f"pod echo runs {image_id}, not an image pulled from {registry}")
        return f"pods echo and client run {self.image} ({image_id.rsplit('@', 1)[-1][:19]})"

    def check_storage(self) -> str:
        self.core.create_namespaced_persistent_volume_claim(NAMESPACE, {
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}}})
        write = "open('/data/canary', 'w').write('ok'); print(open('/data/canary').read())"
        writer = self._container("writer", ["python3", "-c", write])
        writer["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
        self.core.create_namespaced_pod(NAMESPACE, {
            "metadata": {"name": "writer"},
            "spec": {"containers": [writer], "restartPolicy": "Never",
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}})
        try:
            _poll("pod writer Succeeded on the claim", self.timeout, self._writer_done)
        except CanaryFailed as exc:
            raise CanaryFailed(f"{exc}; claim data: {self._last_warning('data')}") from exc
        pvc = self.core.read_namespaced_persistent_volume_claim("data", NAMESPACE)
        return f"claim data bound to {pvc.spec.volume_name} (class {pvc.spec.storage_class_name}); pod writer wrote it"

    def _last_warning(self, name: str) -> str:
        events = self.core.list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.name={name}").items
        warnings = [e for e in events if e.type == "Warning"]
        return warnings[-1].message if warnings else "no warning events"

    def _writer_done(self) -> bool:
        phase = self.core.read_namespaced_pod("writer", NAMESPACE).status.phase
        if phase == "Failed":
            log = self.core.read_namespaced_pod_log("writer", NAMESPACE)
            raise CanaryFailed(f"pod writer failed on the claim: {log.strip()[-300:]}")
        return bool(phase == "Succeeded")

    def check_dns(self) -> str:
        svc = self.service_ip()
        for name in (f"echo.{NAMESPACE}.svc.cluster.local", "echo", "kubernetes.default"):
            # Polled: CoreDNS caches answers for 30 s, so a name of an earlier run's Service may still resolve
            # to that Service's address for a while. It must converge on this run's ClusterIP.
            want = None if name == "kubernetes.default" else [svc]
            _poll(f"{name} resolving in pod client{f' to {svc}' if want else ''}", 60,
                  functools.partial(self._resolves, name, want))
        return f"echo.{NAMESPACE}.svc.cluster.local, echo and kubernetes.default resolve; echo -> {svc}"

    def _resolves(self, name: str, want: list[str] | None) -> dict[str, Any] | Exception | None:
        answer = self.probe({"op": "resolve", "host": name})
        if "error" in answer:
            return CanaryFailed(f"{name} {answer['error']}")
        if want is not None and answer["addrs"] != want:
            return CanaryFailed(f"{name} resolves to {answer['addrs']}")
        return answer

    def service_ip(self) -> str:
        return str(self.core.read_namespaced_service("echo", NAMESPACE).spec.cluster_ip)

    def check_service(self) -> str:
        ip = self.service_ip()
        answer = _poll("client -> Service echo", 60, lambda: self._ok(self.connect(ip)))
        # The probe tells a reset from a drop: a port nobody listens on must come back "refused", not "timeout".
        pod_ip = self.core.read_namespaced_pod("echo", NAMESPACE).status.pod_ip
        closed = self.probe({"op": "connect", "host": pod_ip, "port": 8081, "timeout": 3.0})
        if closed.get("result") != "refused":
            raise CanaryFailed(f"a closed port of pod echo ({pod_ip}:8081) answered {closed}, not 'refused'")
        return (f"client -> {ip}:80 -> pod echo:8080 answered {answer['body'].splitlines()[0]!r}; "
                f"closed port {pod_ip}:8081 refused")

    @staticmethod
    def _ok(answer: dict[str, Any]) -> dict[str, Any] | None:
        return answer if answer.get("result") == "ok" and MARKER in answer.get("body", "") else None

    def check_ingress(self) -> str:
        crt, key = self.tls_dir / f"{HOST}.crt", self.tls_dir / f"{HOST}.key"
        if not crt.is_file() or not key.is_file():
            raise CanaryFailed(f"no certificate in {self.tls_dir}: run scripts/setup_ingress_tls.sh")
        self.core.create_namespaced_secret(NAMESPACE, {
            "metadata": {"name": "somabrain-tls"}, "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": crt.read_text(), "tls.key": key.read_text()}})
        self.net.create_namespaced_ingress(NAMESPACE, {
            "metadata": {"name": "canary"},
            "spec": {"ingressClassName": "nginx", "tls": [{"hosts": [HOST], "secretName": "somabrain-tls"}],
                     "rules": [{"host": HOST, "http": {"paths": [{
                         "path": INGRESS_PATH, "pathType": "Prefix",
                         "backend": {"service": {"name": "echo", "port": {"number": 80}}}}]}}]}})
        expected = ssl.PEM_cert_to_DER_cert(crt.read_text())
        status, _response = _poll(f"https://{HOST}:{self.ingress[1]} through the ingress", self.timeout,
                                  lambda: self._https_get(crt, expected))
        return (f"https://{HOST}:{self.ingress[1]}{INGRESS_PATH} (127.0.0.1, SNI {HOST}) -> {status}, "
                f"certificate from {crt.name}")

    def _https_get(self, ca: Path, expected_der: bytes) -> tuple[str, str] | None:
        status, body, peer = https_get(self.ingress, INGRESS_PATH, ca)
        if peer != expected_der:
            raise CanaryFailed("the ingress serves a different certificate than scripts/setup_ingress_tls.sh made")
        return (status, body) if " 200 " in status and MARKER in body else None

    def check_policy_denies(self) -> str:
        self.net.create_namespaced_network_policy(NAMESPACE, {
            "metadata": {"name": "default-deny"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
        ip = self.service_ip()
        _poll("the default-deny policy to take effect", 60, lambda: self._denied(self.connect(ip)))
        if not self._ready("echo"):
            raise CanaryFailed("pod echo stopped being Ready: the failure is not the policy's")
        return f"client -> {ip}:80 timed out (the policy dropped it); pod echo still Ready"

    @staticmethod
    def _denied(answer: dict[str, Any]) -> dict[str, Any] | None:
        """A timeout is a denial; still connecting is "not yet"; anything else is inconclusive and fails."""
        result = answer.get("result")
        if result == "timeout":
            return answer
        if result == "ok":
            return None
        if result == "refused":
            raise CanaryFailed("connection refused (a TCP reset): something answered, no policy dropped the packet")
        raise CanaryFailed(f"the connection failed in a way no policy causes: {answer.get('error')}")

    def check_policy_allows(self) -> str:
        self.net.create_namespaced_network_policy(NAMESPACE, {
            "metadata": {"name": "allow-client"},
            "spec": {"podSelector": {"matchLabels": {"app": "echo"}}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                                  "ports": [{"port": 8080, "protocol": "TCP"}]}]}})
        ip = self.service_ip()
        _poll("the allow policy to take effect", 60, lambda: self._ok(self.connect(ip)))
        return f"client -> {ip}:80 answers again once policy allow-client admits it"


def run(canary: Canary, keep: bool) -> int:
    checks: list[tuple[str, Callable[[], str]]] = [
        ("registry image", canary.check_registry_image),
        ("storage", canary.check_storage),
        ("cluster DNS", canary.check_dns),
        ("Service", canary.check_service),
        ("TLS ingress", canary.check_ingress),
        ("NetworkPolicy deny", canary.check_policy_denies),
        ("NetworkPolicy allow", canary.check_policy_allows),
    ]
    t0 = time.monotonic()
    canary.fresh_namespace()
    canary.deploy()
    passed = failed = 0
    try:
        for name, check in checks:
            started = time.monotonic()
            try:
                detail = check()
            except CanaryFailed as exc:
                _say(f"FAIL {name}: {exc}")
                failed += 1
                break  # later checks build on this one
            _say(f"ok   {name} ({time.monotonic() - started:.1f}s): {detail}")
            passed += 1
    finally:
        if keep:
            _say(f"kept namespace {NAMESPACE} (--keep)")
        else:
            canary.delete_namespace()
    _say(f"{passed} passed, {failed} failed in {time.monotonic() - t0:.0f}s")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ops.cluster_canary",
        description="Prove a Kubernetes cluster is real: registry image, DNS, Service, TLS ingress on "
                    "127.0.0.1:9999, NetworkPolicy enforcement. Works in namespace somabrain-canary.")
    parser.add_argument("--image", required=True,
                        help="an image with python3, in the cluster's registry (e.g. 127.0.0.1:5000/...)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument("--tls-dir", type=Path, default=DEFAULT_TLS_DIR,
                        help=f"where scripts/setup_ingress_tls.sh wrote {HOST}.crt/.key (default: infra/tls)")
    parser.add_argument("--ingress-port", type=int, default=9999, help="the ingress TLS port on 127.0.0.1")
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for pods and the ingress")
    parser.add_argument("--keep", action="store_true", help="leave the namespace for a look afterwards")
    args = parser.parse_args(argv)

    from kubernetes import config
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    try:
        api = config.new_client_from_config(config_file=args.kubeconfig, context=args.context)
    except (ConfigException, OSError, TypeError) as exc:
        print(f"cluster_canary: cannot load the kubeconfig: {exc}", file=sys.stderr)
        return 2
    canary = Canary(api, args.image, args.tls_dir, ("127.0.0.1", args.ingress_port), args.timeout)
    try:
        return run(canary, args.keep)
    except ApiException as exc:
        print(f"cluster_canary: the API refused a request: {exc.status} {exc.reason}: {exc.body!s:.300}",
              file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"cluster_canary: cannot reach the cluster: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
