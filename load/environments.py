"""Where a run goes: the API endpoint to load, and the sampler that watches the workloads.

dev   the compose stack: endpoint http://127.0.0.1:$SOMABRAIN_HOST_PORT from the env file scripts/dev_up.sh wrote
      (.env.local), and the compose project every tool means (targets.envfile.compose_project: --project, else
      that file's COMPOSE_PROJECT_NAME, else $COMPOSE_PROJECT_NAME, else somabrain); samples from the Docker
      Engine API.
prod  the cluster in the current kubeconfig context: endpoint http://127.0.0.1:9696 (scripts/port_forward.sh)
      unless --endpoint names the ingress; samples from metrics.k8s.io, limits from the pod spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from conformance.inventory import API, NAMESPACE
from load.samplers.base import Sampler
from targets.envfile import ENV_FILE, compose_project, read_env_file

ROOT = Path(__file__).resolve().parent.parent


class EnvironmentError_(ValueError):
    """The environment cannot be resolved (missing env file, bad value); the message says what to do."""


@dataclass(frozen=True)
class Environment:
    name: str
    endpoint: str
    scope: str  # compose project or namespace

    def sampler(self, *, kube_context: str | None = None, kubeconfig: str | None = None) -> Sampler:
        if self.name == "dev":
            from load.samplers.docker_stats import DockerSampler

            return DockerSampler(self.scope)
        from load.samplers.kube_metrics import KubeSampler

        return KubeSampler(self.scope, context=kube_context, kubeconfig=kubeconfig)


def resolve(env: str, *, endpoint: str | None = None, env_file: Path | None = None, project: str | None = None,
            namespace: str | None = None) -> Environment:
    if env == "dev":
        path = env_file or ENV_FILE
        try:
            values = read_env_file(path)
        except OSError as exc:
            raise EnvironmentError_(
                f"--env dev reads the host port and project from {path}, which cannot be read ({exc.strerror}); "
                "start the stack first (make up) or pass --env-file") from exc
        port = values.get("SOMABRAIN_HOST_PORT", str(API.port))  # compose publishes the API on its own port
        if not port.isdigit():
            raise EnvironmentError_(f"{path}: SOMABRAIN_HOST_PORT={port!r} is not a port number")
        return Environment("dev", endpoint or f"http://127.0.0.1:{port}", compose_project(project, path))
    if env == "prod":
        return Environment("prod", endpoint or f"http://127.0.0.1:{API.port}", namespace or NAMESPACE)
    raise EnvironmentError_(f"--env {env!r}: expected dev or prod")
