"""Live tests: they talk to the running compose stack (scripts/stack.sh up), never start it themselves.

test_smoke.py and test_tls_front.py are marked `live`: `make live` (pytest -m live) runs them after `make up`, and
without the stack they fail. test_airgap_*.py check the air-gapped recipes without Docker and run with the unit
tests. The stack's ports and credentials come from .env.local (written by scripts/dev_up.sh), or from the file named
by SOMABRAIN_LIVE_ENV_FILE.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from targets.envfile import read_env_file

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


@pytest.fixture(scope="session")
def stack() -> Stack:
    env_file = Path(os.environ.get("SOMABRAIN_LIVE_ENV_FILE", ROOT / ".env.local"))
    if not env_file.is_file():
        pytest.fail(f"{env_file} does not exist: start the stack with scripts/stack.sh up")
    return Stack(read_env_file(env_file))
