"""The two loaded environments side by side, paired through the service inventory, with naming helpers."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import SplitResult, urlsplit

from conformance.inventory import SERVICES, Service, by_k8s_service
from conformance.loaders.compose import ComposeProject, ComposeService
from conformance.loaders.k8s import Container, Manifests, Workload
from conformance.netpol import Pod, Port

DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "redis": 6379,
    "rediss": 6379,
    "postgresql": 5432,
    "postgres": 5432,
    "kafka": 9092,
}
_COMPOSE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}")
_K8S_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@dataclass
class Pair:
    """One service of the inventory with what each environment has for it."""

    service: Service
    dev: ComposeService | None
    workload: Workload | None
    container: Container | None

    @property
    def name(self) -> str:
        return self.service.compose

    @property
    def in_both(self) -> bool:
        return self.dev is not None and self.container is not None


@dataclass(frozen=True)
class Endpoint:
    """Where a URL points, in the comparators' common vocabulary."""

    scheme: str
    service: str | None  # the compose service name it resolves to, None when unknown
    host: str
    port: int | None
    path: str
    external: bool = False

    def describe(self) -> str:
        where = self.service or self.host
        if self.external:
            where = f"{self.host} (external)"
        return f"{self.scheme}://{where}:{self.port}{self.path}"


@dataclass
class ParityContext:
    compose: ComposeProject
    k8s: Manifests
    pairs: list[Pair] = field(default_factory=list)

    @classmethod
    def build(cls, compose: ComposeProject, k8s: Manifests) -> ParityContext:
        ctx = cls(compose, k8s)
        # The services prod runs in the cluster first, then those it runs outside (the order of the findings).
        for service in sorted(SERVICES, key=lambda s: s.outside is not None):
            prod = service.in_cluster
            workload = k8s.workloads.get(prod.workload) if prod else None
            container = workload.container(prod.container) if workload and prod else None
            ctx.pairs.append(Pair(service, compose.services.get(service.compose), workload, container))
        return ctx

    def pair(self, compose_name: str) -> Pair | None:
        return next((p for p in self.pairs if p.name == compose_name), None)

    @property
    def in_both(self) -> list[Pair]:
        return [p for p in self.pairs if p.in_both]

    # -- naming ------------------------------------------------------------------------------------------
    def dev_host(self, host: str) -> str | None:
        """The compose service a hostname reaches inside the compose networks."""
        if host in self.compose.services:
            return host
        for svc in self.compose.services.values():
            if any(host in aliases for aliases in svc.networks.values()):
                return svc.name
        return None

    def prod_host(self, host: str, namespace: str) -> tuple[str | None, str | None]:
        """(k8s Service name, compose service name) for an in-cluster DNS name, else (None, None)."""
        parts = host.split(".")
        name = parts[0]
        ns = parts[1] if len(parts) > 1 else namespace
        rest = ".".join(parts[2:])
        if len(parts) > 2 and rest not in ("svc", "svc.cluster.local"):
            return None, None
        svc = self.k8s.services.get(name)
        if svc is None or svc.namespace != ns:
            return None, None
        service = by_k8s_service(name)
        return name, service.compose if service else None

    def dev_endpoint(self, raw: str, value: str) -> Endpoint | None:
        template = _COMPOSE_VAR.sub(r"{\1}", raw)
        return self._endpoint(template, value, dev=True, namespace="")

    def prod_endpoint(self, template: str, namespace: str) -> Endpoint | None:
        return self._endpoint(_K8S_VAR.sub(r"{\1}", template), template, dev=False, namespace=namespace)

    def _endpoint(self, template: str, value: str, *, dev: bool, namespace: str) -> Endpoint | None:
        if "://" not in template:
            return None
        parts = _split(template)
        if parts is None or not parts.hostname or "{" in parts.hostname:
            parts = _split(value)
            if parts is None or not parts.hostname:
                return None
        try:
            port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            return None
        host = parts.hostname or ""
        if dev:
            service = self.dev_host(host)
            external = False
        else:
            _, service = self.prod_host(host, namespace)
            external = service is None
        return Endpoint(parts.scheme, service, host, port, parts.path, external)

    def display_path(self, path: Path | str) -> str:
        """A host path of the compose side as the compose file writes it, relative to the project directory
        (`../k8s/policy`), so that what the gate reports does not depend on where the tree is checked out (an
        exception pins the exact value). A path outside the directory above the project (a system path such as
        /etc/ssl) stays absolute."""
        project = self.compose.directory.resolve()
        if not Path(path).is_relative_to(project.parent):
            return str(path)
        return os.path.relpath(path, project)

    # -- network identities ---------------------------------------------------------------------------
    def prod_pod(self, pair: Pair) -> Pod | None:
        if pair.workload is not None:
            ports = tuple(Port(p.number, p.protocol, p.name) for c in pair.workload.containers for p in c.ports)
            return Pod(pair.name, pair.workload.namespace, pair.workload.labels, ports=ports)
        peer = pair.service.peer
        if peer is not None:
            return Pod(pair.name, peer.namespace, peer.labels, peer.namespace_labels, peer.ports)
        return None


def _split(url: str) -> SplitResult | None:
    try:
        return urlsplit(url)
    except ValueError:
        return None


def host_path(svc: ComposeService, container_path: str) -> Path | None:
    """The host file a container path comes from, through the service's bind mounts (longest match)."""
    best: tuple[int, Path] | None = None
    for mount in svc.mounts:
        if mount.kind != "bind":
            continue
        target = PurePosixPath(mount.target)
        path = PurePosixPath(container_path)
        if path == target or target in path.parents:
            rest = path.relative_to(target)
            if best is None or len(target.parts) > best[0]:
                best = (len(target.parts), Path(mount.source) / rest)
    return best[1] if best else None


def dev_ports(svc: ComposeService) -> list[int]:
    """The ports a compose service serves inside its networks (container side of `ports`, and `expose`)."""
    return sorted({p.target for p in svc.ports} | set(svc.expose))


def display_raw(raw: str) -> str:
    """A compose value as written, with `${VAR:?long message}` shortened to `${VAR}`."""
    return _COMPOSE_VAR.sub(r"${\1}", raw)
