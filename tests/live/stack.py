"""The running compose stack as the live tests see it (Stack: its published ports, HTTP calls to them and its
containers), the docker CLI, and the repository root. The `stack` fixture (conftest.py) reads it from .env.local."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Stack:
    """Where the running stack listens on the host, and how to find its containers."""

    env: dict[str, str]

    def port(self, name: str) -> int:
        return int(self.env[name])

    def url(self, port_var: str, path: str) -> str:
        return f"http://127.0.0.1:{self.port(port_var)}{path}"

    @property
    def project(self) -> str:
        return self.env.get("COMPOSE_PROJECT_NAME", "somabrain")

    def http(self, method: str, url: str, body: Any = None, tenant: str | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if tenant is not None:
            headers["X-Tenant-ID"] = tenant
        data = None if body is None else json.dumps(body).encode()
        # Only ever http://127.0.0.1:<published port> (see url()).
        request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def container_id(self, service: str) -> str:
        out = docker(
            "ps", "-q", "--filter", f"label=com.docker.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
        ).split()
        assert len(out) == 1, f"expected one running container for service {service}, found {out}"
        return out[0]

    def inspect(self, service: str) -> dict[str, Any]:
        result: list[dict[str, Any]] = json.loads(docker("inspect", self.container_id(service)))
        return result[0]


def docker(*args: str) -> str:
    binary = shutil.which("docker")
    assert binary, "the docker CLI is needed for the live tests"
    return subprocess.run([binary, *args], check=True, capture_output=True, text=True, timeout=60).stdout
