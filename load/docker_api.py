"""A small Docker Engine API client over the local unix socket (httpx), enough for stats, inspect and events.

targets.compose (ComposeTarget) drives the docker CLI and has no stats or events: the sampler asks the engine
for one-shot stats of every container once a second and for a run's events, which a `docker` process per call
would not keep up with. Containers are found by the same compose labels ComposeTarget uses.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from targets.compose import PROJECT_LABEL

API_VERSION = "v1.41"  # Docker 20.10; newer engines still answer it


class DockerUnavailable(RuntimeError):
    """The Docker Engine API did not answer."""


def default_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        raise DockerUnavailable(f"DOCKER_HOST={host}: only a local unix socket is supported")
    return host.removeprefix("unix://")


class DockerAPI:
    def __init__(self, socket_path: str | None = None, timeout: float = 10.0) -> None:
        self.socket_path = socket_path or default_socket()
        self._client = httpx.Client(
            transport=httpx.HTTPTransport(uds=self.socket_path), base_url=f"http://docker/{API_VERSION}",
            timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        try:
            response = self._client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise DockerUnavailable(f"Docker Engine API at {self.socket_path}: {exc}") from exc
        if response.status_code == 404:
            raise KeyError(path)
        if response.status_code >= 400:
            raise DockerUnavailable(f"Docker Engine API GET {path}: {response.status_code} {response.text.strip()}")
        return response.json()

    def ping(self) -> None:
        try:
            self._client.get("/_ping").raise_for_status()
        except httpx.HTTPError as exc:
            raise DockerUnavailable(
                f"the Docker Engine API does not answer at {self.socket_path} ({exc}); start the stack: make up"
            ) from exc

    def containers(self, project: str) -> list[dict[str, Any]]:
        """Every container (running or not) of a compose project."""
        filters = json.dumps({"label": [f"{PROJECT_LABEL}={project}"]})
        result: list[dict[str, Any]] = self.get("/containers/json", {"all": "1", "filters": filters})
        return result

    def inspect(self, container: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"/containers/{container}/json")
        return result

    def stats(self, container: str) -> dict[str, Any]:
        """One stats reading, without the 1 s wait for a second CPU reading (`one-shot`, API >= 1.41)."""
        result: dict[str, Any] = self.get(f"/containers/{container}/stats",
                                          {"stream": "false", "one-shot": "true"})
        return result

    def events(self, project: str, since: float, until: float) -> list[dict[str, Any]]:
        """Container events of a project in [since, until] (unix seconds); the call returns, it does not stream."""
        filters = json.dumps({"type": ["container"], "label": [f"{PROJECT_LABEL}={project}"]})
        try:
            response = self._client.get("/events", params={
                "since": f"{since:.9f}", "until": f"{until:.9f}", "filters": filters})
        except httpx.HTTPError as exc:
            raise DockerUnavailable(f"Docker Engine API events: {exc}") from exc
        response.raise_for_status()
        return [json.loads(line) for line in response.text.splitlines() if line.strip()]
