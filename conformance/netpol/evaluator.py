"""Evaluate Kubernetes NetworkPolicies (networking.k8s.io/v1) for flows between pods and addresses.

Semantics implemented (as the API reference defines them):
- a policy applies to the pods its `podSelector` selects in the policy's own namespace;
- `policyTypes` defaults to [Ingress], plus Egress when `spec.egress` is present;
- a pod selected by no policy of a direction is unrestricted in that direction; once selected, only what
  some rule of some selecting policy admits is allowed (policies are additive, a union);
- a rule with no `from`/`to` admits every peer; with no `ports` admits every port;
- a peer is a `podSelector` (the policy's namespace), a `namespaceSelector` (all pods of matching
  namespaces), both (pods matching in matching namespaces), or an `ipBlock` (cidr minus `except`),
  which matches only addresses outside the cluster here;
- ports match by number or by the destination's named container port, with `endPort` ranges, and the
  protocol (default TCP);
- selectors support `matchLabels` and `matchExpressions` (In, NotIn, Exists, DoesNotExist).
A flow is allowed when the source's egress and the destination's ingress both allow it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from conformance.netpol.model import DNS_PORTS, KUBE_DNS, DirectionVerdict, Endpoint, External, Pod, Port, Verdict

Resource = Mapping[str, Any]


class PolicyError(ValueError):
    """A NetworkPolicy the evaluator cannot interpret (the message names it)."""


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector; an empty selector matches everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != str(value):
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], [str(v) for v in expr.get("values") or []]
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise PolicyError(f"unknown selector operator {op!r}")
    return True


@dataclass(frozen=True)
class _Policy:
    name: str
    namespace: str
    pod_selector: Mapping[str, Any]
    types: frozenset[str]
    ingress: tuple[Mapping[str, Any], ...]
    egress: tuple[Mapping[str, Any], ...]


class PolicySet:
    """The NetworkPolicies of a cluster (or of the manifests that will make one)."""

    def __init__(self, policies: Iterable[Resource], default_namespace: str = "default") -> None:
        self.policies: list[_Policy] = []
        for res in policies:
            if res.get("kind") != "NetworkPolicy":
                continue
            meta = res.get("metadata") or {}
            name = meta.get("name", "<unnamed>")
            spec = res.get("spec")
            if not isinstance(spec, Mapping) or "podSelector" not in spec:
                raise PolicyError(f"NetworkPolicy {name}: spec.podSelector is required")
            types = spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"])
            if not set(types) <= {"Ingress", "Egress"}:
                raise PolicyError(f"NetworkPolicy {name}: unknown policyTypes {types}")
            self.policies.append(
                _Policy(
                    name=name,
                    namespace=meta.get("namespace") or default_namespace,
                    pod_selector=spec.get("podSelector") or {},
                    types=frozenset(types),
                    ingress=tuple(spec.get("ingress") or ()),
                    egress=tuple(spec.get("egress") or ()),
                )
            )

    @classmethod
    def from_manifests(cls, resources: Iterable[Resource], default_namespace: str = "default") -> PolicySet:
        return cls((r for r in resources if r.get("kind") == "NetworkPolicy"), default_namespace)

    # -- single flows -------------------------------------------------------------------------------
    def evaluate(self, src: Endpoint, dst: Endpoint, port: Port) -> Verdict:
        egress = self._direction(src, dst, port, "Egress") if isinstance(src, Pod) else _outside(src)
        ingress = self._direction(dst, src, port, "Ingress") if isinstance(dst, Pod) else _outside(dst)
        return Verdict(src, dst, port, egress, ingress)

    def allows(self, src: Endpoint, dst: Endpoint, port: Port | int, protocol: str = "TCP") -> bool:
        if isinstance(port, int):
            port = _resolve_port(dst, port, protocol)
        return self.evaluate(src, dst, port).allowed

    def dns_allowed(self, src: Pod, dns: Pod = KUBE_DNS) -> dict[str, bool]:
        """Whether `src` can reach the cluster DNS, per protocol ({'UDP': ..., 'TCP': ...})."""
        return {p.protocol: self.evaluate(src, dns, p).allowed for p in DNS_PORTS}

    def external_cidrs(self, src: Pod, port: Port) -> list[str]:
        """The ipBlock CIDRs that `src` may open connections to on `port` (empty: none, or no restriction
        applies, which `egress_unrestricted` tells apart)."""
        cidrs: list[str] = []
        for policy in self._selecting(src, "Egress"):
            for rule in policy.egress:
                if not _ports_match(rule.get("ports"), port):
                    continue
                cidrs.extend(peer["ipBlock"]["cidr"] for peer in rule.get("to") or () if "ipBlock" in peer)
        return cidrs

    def egress_unrestricted(self, src: Pod) -> bool:
        return not self._selecting(src, "Egress")

    # -- many flows -----------------------------------------------------------------------------------
    def truth_table(
        self, sources: Sequence[Endpoint], destinations: Sequence[tuple[Endpoint, Sequence[Port]]]
    ) -> TruthTable:
        rows = [
            self.evaluate(src, dst, port)
            for src in sources
            for dst, ports in destinations
            for port in ports
            if src != dst
        ]
        return TruthTable(rows)

    # -- internals ------------------------------------------------------------------------------------
    def _selecting(self, pod: Pod, direction: str) -> list[_Policy]:
        return [
            p
            for p in self.policies
            if p.namespace == pod.namespace
            and direction in p.types
            and selector_matches(p.pod_selector, pod.labels)
        ]

    def _direction(self, subject: Pod, other: Endpoint, port: Port, direction: str) -> DirectionVerdict:
        selecting = self._selecting(subject, direction)
        names = tuple(p.name for p in selecting)
        if not selecting:
            return DirectionVerdict(True, f"no {direction.lower()} policy selects {subject}", names)
        peers_key = "from" if direction == "Ingress" else "to"
        target = subject if direction == "Ingress" else other
        for policy in selecting:
            rules = policy.ingress if direction == "Ingress" else policy.egress
            for index, rule in enumerate(rules):
                peers = rule.get(peers_key)
                if peers and not any(_peer_matches(peer, policy.namespace, other) for peer in peers):
                    continue
                if _ports_match(rule.get("ports"), _named(port, target)):
                    return DirectionVerdict(True, f"{policy.name} {direction.lower()}[{index}] admits it", names)
        return DirectionVerdict(
            False,
            f"{direction.lower()} of {subject} is restricted by {', '.join(names)} and no rule admits it",
            names,
        )


@dataclass(frozen=True)
class TruthTable:
    """Every evaluated flow, with its verdict."""

    rows: list[Verdict]

    def allowed(self, src: str, dst: str, port: int, protocol: str = "TCP") -> bool:
        """Look a flow up by endpoint names."""
        for row in self.rows:
            if (
                _name(row.src) == src
                and _name(row.dst) == dst
                and row.port.number == port
                and row.port.protocol == protocol
            ):
                return row.allowed
        raise KeyError(f"flow {src} -> {dst}:{port}/{protocol} was not evaluated")

    def as_dict(self) -> dict[tuple[str, str, int, str], bool]:
        return {(_name(r.src), _name(r.dst), r.port.number, r.port.protocol): r.allowed for r in self.rows}

    def render(self) -> str:
        lines = [f"{'source':<24} {'destination':<28} {'port':<10} verdict"]
        for r in self.rows:
            lines.append(f"{_name(r.src):<24} {_name(r.dst):<28} {r.port!s:<10} {'allow' if r.allowed else 'deny'}")
        return "\n".join(lines)


def _name(endpoint: Endpoint) -> str:
    return endpoint.name


def _outside(endpoint: External) -> DirectionVerdict:
    return DirectionVerdict(True, f"{endpoint} is outside the cluster: no policy applies")


def _resolve_port(dst: Endpoint, number: int, protocol: str) -> Port:
    if isinstance(dst, Pod):
        for port in dst.ports:
            if port.number == number and port.protocol == protocol:
                return port
    return Port(number, protocol)


def _named(port: Port, target: Endpoint) -> Port:
    if port.name is None and isinstance(target, Pod):
        return _resolve_port(target, port.number, port.protocol)
    return port


def _peer_matches(peer: Mapping[str, Any], policy_ns: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        if not isinstance(other, External):
            return False
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other.ip)
        try:
            if address not in ipaddress.ip_network(block["cidr"], strict=False):
                return False
            return not any(address in ipaddress.ip_network(e, strict=False) for e in block.get("except") or ())
        except ValueError as exc:
            raise PolicyError(f"invalid ipBlock {block}: {exc}") from exc
    if isinstance(other, External):
        return False
    if "namespaceSelector" not in peer and "podSelector" not in peer:
        raise PolicyError(f"peer {dict(peer)} has no podSelector, namespaceSelector or ipBlock")
    if "namespaceSelector" in peer:
        assert other.namespace_labels is not None
        ns_ok = selector_matches(peer["namespaceSelector"], other.namespace_labels)
    else:
        ns_ok = other.namespace == policy_ns
    return ns_ok and selector_matches(peer.get("podSelector"), other.labels)


def _ports_match(ports: Sequence[Mapping[str, Any]] | None, port: Port) -> bool:
    if not ports:
        return True
    for spec in ports:
        if spec.get("protocol", "TCP") != port.protocol:
            continue
        wanted = spec.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str) and not wanted.isdigit():
            if port.name == wanted:
                return True
            continue
        low = int(wanted)
        high = int(spec.get("endPort", low))
        if low <= port.number <= high:
            return True
    return False
