"""What the cluster-tier tests share: the pinned tools of `make cluster` and the context it writes.

The tests in this directory run against the real local cluster (`make cluster`; they are marked `cluster`, and
`make cluster-test` runs them). Fixtures are in conftest.py; plain helpers are here, imported by the test modules.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from conformance.inventory import NAMESPACE

REPO = Path(__file__).resolve().parents[2]
CONTEXT = "somabrain-local"
VENV_BIN = REPO / ".venv" / "bin"


@cache
def toolchain_bin() -> str:
    """Where `make cluster` linked the pinned tilt and kubectl (kubectl of the cluster's own version)."""
    return subprocess.run([str(REPO / "scripts" / "cluster" / "toolchain.sh"), "bindir"], capture_output=True,
                          text=True, check=True).stdout.strip()


def kubectl(*args: str, namespace: str | None = NAMESPACE, check: bool = True, timeout: float = 120,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    ns = ["-n", namespace] if namespace else []
    return subprocess.run([f"{toolchain_bin()}/kubectl", "--context", CONTEXT, *ns, *args], input=stdin,
                          capture_output=True, text=True, check=check, timeout=timeout)


def tilt(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """The pinned Tilt of the cluster toolchain, with analytics off."""
    bindir = toolchain_bin()
    env = {**os.environ, "TILT_DISABLE_ANALYTICS": "1", "PATH": f"{bindir}:{os.environ.get('PATH', '')}"}
    return subprocess.run([f"{bindir}/tilt", *args, "--context", CONTEXT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def port_forward(target: str, remote: int, namespace: str = NAMESPACE) -> Iterator[int]:
    """`kubectl port-forward TARGET LOCAL:REMOTE` for the block; yields the local port once it accepts."""
    port = free_port()
    forward = subprocess.Popen([f"{toolchain_bin()}/kubectl", "--context", CONTEXT, "-n", namespace, "port-forward",
                                target, f"{port}:{remote}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or forward.poll() is not None:
                    raise RuntimeError(f"port-forward {target} {port}:{remote} did not come up") from None
                time.sleep(0.5)
        yield port
    finally:
        forward.terminate()
        forward.wait(timeout=10)


INGRESS = ("127.0.0.1", 9999)
HOST = "somabrain.internal"
CA = REPO / "infra" / "tls" / f"{HOST}.crt"


def ingress(method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    """One request to https://somabrain.internal:9999 (the cluster's TLS ingress on 127.0.0.1), verified against
    the repo's CA: (status, parsed JSON body or the text)."""
    conn = http.client.HTTPSConnection(HOST, INGRESS[1], timeout=30, context=ssl.create_default_context(cafile=str(CA)))
    conn._create_connection = lambda _addr, *a, **k: socket.create_connection(INGRESS, *a, **k)  # type: ignore[attr-defined]
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        response = conn.getresponse()
        raw = response.read().decode("utf-8", "replace")
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw


def prod_conformance(*args: str, report: Path | None = None, kubeconfig: Path | None = None,
                     timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    """`pytest conformance/ --env prod` against the cluster, the API checks through the TLS ingress (as users reach
    it: https://somabrain.internal:9999, resolved to 127.0.0.1 by --resolve)."""
    who = ["--kubeconfig", str(kubeconfig)] if kubeconfig else ["--kube-context", CONTEXT]
    return subprocess.run([str(VENV_BIN / "pytest"), "conformance/", "--env", "prod", *who,
                           "--base-url", f"https://{HOST}:{INGRESS[1]}",
                           "--resolve", f"{HOST}:{INGRESS[1]}:{INGRESS[0]}",
                           *(["--report-json", str(report)] if report else []), "-q", "-p", "no:cacheprovider",
                           *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)


def somabrain(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """The `somabrain` CLI of the project venv."""
    return subprocess.run([str(VENV_BIN / "somabrain"), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)


def service_account_kubeconfig(namespace: str, account: str, directory: Path) -> Path:
    """A kubeconfig (context `account`) whose user is a fresh token of the existing ServiceAccount `account` of
    `namespace`; the API server and its CA are those of the somabrain-local context."""
    token = kubectl("create", "token", account, "--duration", "1h", namespace=namespace).stdout.strip()

    def cluster(field: str) -> str:
        return kubectl("config", "view", "--minify", "--raw", "-o", f"jsonpath={{.clusters[0].cluster.{field}}}",
                       namespace=None).stdout.strip()

    server = {"server": cluster("server"), "certificate-authority-data": cluster("certificate-authority-data")}
    path = directory / f"{account}.kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": account,
        "clusters": [{"name": "local", "cluster": server}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "local", "user": account, "namespace": namespace}}]}))
    path.chmod(0o600)
    return path
