"""What the NetworkPolicy evaluator reasons about: pods, addresses outside the cluster, ports, verdicts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def _frozen(labels: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(labels or {}))


@dataclass(frozen=True)
class Pod:
    """A pod identity: the labels of a workload's pod template, in a namespace.

    `namespace_labels` default to what Kubernetes sets on every namespace (kubernetes.io/metadata.name)."""

    name: str
    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    namespace_labels: Mapping[str, str] | None = None
    ports: tuple[Port, ...] = ()  # the pod's container ports, for named NetworkPolicy ports

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _frozen(self.labels))
        ns_labels = self.namespace_labels if self.namespace_labels is not None else {}
        object.__setattr__(self, "namespace_labels", _frozen({NAMESPACE_NAME_LABEL: self.namespace, **ns_labels}))

    def __hash__(self) -> int:
        return hash((self.name, self.namespace, tuple(sorted(self.labels.items()))))

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class External:
    """An address outside the cluster (no policy selects it; only ipBlock peers match it)."""

    name: str
    ip: str

    def __str__(self) -> str:
        return f"{self.name} ({self.ip})"


Endpoint = Pod | External


@dataclass(frozen=True)
class Port:
    number: int
    protocol: str = "TCP"
    name: str | None = None  # the container port's name, when it has one

    def __str__(self) -> str:
        return f"{self.number}/{self.protocol}"


@dataclass(frozen=True)
class DirectionVerdict:
    """One side of a flow: the source's egress or the destination's ingress."""

    allowed: bool
    reason: str
    policies: tuple[str, ...] = ()  # the policies that select the subject in this direction


@dataclass(frozen=True)
class Verdict:
    src: Endpoint
    dst: Endpoint
    port: Port
    egress: DirectionVerdict
    ingress: DirectionVerdict

    @property
    def allowed(self) -> bool:
        return self.egress.allowed and self.ingress.allowed

    @property
    def reason(self) -> str:
        if self.allowed:
            return f"egress: {self.egress.reason}; ingress: {self.ingress.reason}"
        blocked = [v.reason for v in (self.egress, self.ingress) if not v.allowed]
        return "; ".join(blocked)


# The cluster DNS that every pod needs (CoreDNS keeps the kube-dns label).
KUBE_DNS = Pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"})
DNS_PORTS = (Port(53, "UDP"), Port(53, "TCP"))
