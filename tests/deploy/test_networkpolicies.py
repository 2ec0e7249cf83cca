"""NetworkPolicies: default-deny plus the flows the service needs; the guide's policy blocks DNS and ingress.

A deliberately small evaluator of the NetworkPolicy semantics used here (podSelector/namespaceSelector
matchLabels, ipBlock, ports). The conformance suite has the full evaluator; this one proves the
manifests and catches the guide's broken policy (tests/deploy/fixtures/guide_networkpolicy.yaml).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.inventory import API, BY_KEY, INGRESS_CONTROLLER, MONITORING, NAMESPACE, SCRAPED, flows

Resource = dict[str, Any]
NS = NAMESPACE


@dataclass(frozen=True)
class Peer:
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)
    ip: str | None = None  # set for endpoints outside the cluster

    @property
    def ns_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace}


def _match(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    return (selector or {}).get("matchLabels", {}).items() <= labels.items()


def _peer_ok(rule_peer: dict[str, Any], policy_ns: str, peer: Peer) -> bool:
    if "ipBlock" in rule_peer:
        network = ipaddress.ip_network(rule_peer["ipBlock"]["cidr"])
        return peer.ip is not None and ipaddress.ip_address(peer.ip) in network
    if peer.ip is not None:
        return False
    if "namespaceSelector" in rule_peer:
        ns_ok = _match(rule_peer["namespaceSelector"], peer.ns_labels)
    else:
        ns_ok = peer.namespace == policy_ns
    return ns_ok and _match(rule_peer.get("podSelector"), peer.labels)


def _port_ok(ports: list[dict[str, Any]] | None, port: int, proto: str) -> bool:
    return not ports or any(p.get("port") == port and p.get("protocol", "TCP") == proto for p in ports)


def allowed(policies: list[Resource], src: Peer, dst: Peer, port: int, proto: str = "TCP") -> bool:
    """True when both the source's egress and the destination's ingress policies admit the flow."""

    def direction_ok(subject: Peer, other: Peer, kind: str, rules_key: str, peers_key: str) -> bool:
        if subject.ip is not None:
            return True  # not a pod: no policy applies
        selecting = [
            p
            for p in policies
            if p["metadata"].get("namespace", NS) == subject.namespace
            and kind in p["spec"].get("policyTypes", ["Ingress"])
            and _match(p["spec"]["podSelector"], subject.labels)
        ]
        if not selecting:
            return True
        for pol in selecting:
            for rule in pol["spec"].get(rules_key) or []:
                peers = rule.get(peers_key)
                peer_ok = not peers or any(_peer_ok(rp, subject.namespace, other) for rp in peers)
                if peer_ok and _port_ok(rule.get("ports"), port, proto):
                    return True
        return False

    return direction_ok(src, dst, "Egress", "egress", "to") and direction_ok(dst, src, "Ingress", "ingress", "from")


def pod_of(key: str) -> Peer:
    """The pods of a service's workload: labelled app=<workload> (k8s/base)."""
    return Peer(NS, {"app": str(BY_KEY[key].workload)})


SOMABRAIN, SOMAMEMORY, REDIS, POSTGRES = (pod_of(key) for key in ("somabrain", "somamemory", "redis", "postgres"))
KUBE_DNS = Peer("kube-system", {"k8s-app": "kube-dns"})
INGRESS_NGINX = Peer(INGRESS_CONTROLLER.namespace, dict(INGRESS_CONTROLLER.labels))
PROMETHEUS = Peer(MONITORING.namespace, dict(MONITORING.labels))  # a Prometheus of the cluster's
OTHER_NS_POD = Peer("default", {"app": "curl"})
KAFKA_EXTERNAL = Peer("", ip="192.0.2.10")
PORT = {key: service.port for key, service in BY_KEY.items()}


@pytest.fixture(scope="module")
def ours(base_manifests: list[Resource]) -> list[Resource]:
    return [r for r in base_manifests if r["kind"] == "NetworkPolicy"]


@pytest.fixture(scope="module")
def guide() -> list[Resource]:
    doc = yaml.safe_load((Path(__file__).parent / "fixtures" / "guide_networkpolicy.yaml").read_text())
    doc["metadata"]["namespace"] = NS
    return [doc]


REQUIRED_FLOWS = [
    ("somabrain DNS UDP", SOMABRAIN, KUBE_DNS, 53, "UDP"),
    ("somabrain DNS TCP", SOMABRAIN, KUBE_DNS, 53, "TCP"),
    ("somamemory DNS", SOMAMEMORY, KUBE_DNS, 53, "UDP"),
    ("ingress-nginx -> somabrain", INGRESS_NGINX, SOMABRAIN, API.port, "TCP"),
    # what each in-cluster service uses (inventory.flows): somabrain -> redis, opa, postgres, somamemory; ...
    *((f"{src.key} -> {dst.key}", pod_of(src.key), pod_of(dst.key), dst.port, "TCP") for src, dst in flows("prod")),
    ("somabrain -> external kafka", SOMABRAIN, KAFKA_EXTERNAL, PORT["kafka"], "TCP"),
    *((f"monitoring -> {s.key} metrics port", PROMETHEUS, pod_of(s.key), s.metrics_port, "TCP") for s in SCRAPED),
]
FORBIDDEN_FLOWS = [
    ("other namespace -> somabrain", OTHER_NS_POD, SOMABRAIN, API.port, "TCP"),
    ("ingress-nginx -> redis", INGRESS_NGINX, REDIS, PORT["redis"], "TCP"),
    ("somamemory -> redis", SOMAMEMORY, REDIS, PORT["redis"], "TCP"),
    ("redis -> postgres", REDIS, POSTGRES, PORT["postgres"], "TCP"),
    ("somabrain -> kafka on another port", SOMABRAIN, KAFKA_EXTERNAL, 22, "TCP"),
    ("postgres -> anywhere outside", POSTGRES, KAFKA_EXTERNAL, PORT["kafka"], "TCP"),
    # Monitoring scrapes the metrics ports only: the data ports (tenant data) stay the API's and the ingress's.
    *((f"monitoring -> {s.key} data port", PROMETHEUS, pod_of(s.key), s.port, "TCP") for s in SCRAPED),
]


@pytest.mark.parametrize(("label", "src", "dst", "port", "proto"), REQUIRED_FLOWS, ids=[f[0] for f in REQUIRED_FLOWS])
def test_required_flow_is_allowed(
    ours: list[Resource], label: str, src: Peer, dst: Peer, port: int, proto: str
) -> None:
    assert allowed(ours, src, dst, port, proto), label


@pytest.mark.parametrize(("label", "src", "dst", "port", "proto"), FORBIDDEN_FLOWS, ids=[f[0] for f in FORBIDDEN_FLOWS])
def test_other_flows_are_denied(ours: list[Resource], label: str, src: Peer, dst: Peer, port: int, proto: str) -> None:
    assert not allowed(ours, src, dst, port, proto), label


def test_default_deny_selects_every_pod_both_ways(ours: list[Resource]) -> None:
    deny = next(p for p in ours if p["metadata"]["name"] == "default-deny-all")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_the_guides_policy_is_caught_blocking_dns_and_ingress(guide: list[Resource]) -> None:
    """The evaluator catches the guide's defect: DNS to kube-system and ingress-nginx are blocked."""
    assert not allowed(guide, SOMABRAIN, KUBE_DNS, 53, "UDP")
    assert not allowed(guide, INGRESS_NGINX, SOMABRAIN, API.port)
    # and, because namespaces carry no `name` label by default, not even in-namespace traffic passes
    assert not allowed(guide, SOMABRAIN, REDIS, PORT["redis"])
