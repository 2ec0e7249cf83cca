"""The NetworkPolicy evaluator against hand-checked truth tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.netpol import DNS_PORTS, KUBE_DNS, External, Pod, PolicyError, PolicySet, Port

NS = "shop"
WEB = Pod("web", NS, {"app": "web"}, ports=(Port(8080, name="http"),))
DB = Pod("db", NS, {"app": "db"}, ports=(Port(5432, name="pg"),))
OTHER = Pod("other", "elsewhere", {"app": "web"})
MONITOR = Pod("prom", "monitoring", {"app": "prometheus"})
OUTSIDE = External("internet", "198.51.100.7")
BROKER = External("broker", "192.0.2.10")


def np(name: str, spec: dict[str, Any], namespace: str = NS) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


DENY_ALL = np("deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})


def table(policies: PolicySet, flows: list[tuple[Any, Any, Port]]) -> list[bool]:
    return [policies.evaluate(s, d, p).allowed for s, d, p in flows]


def test_no_policy_allows_everything() -> None:
    assert table(PolicySet([]), [(WEB, DB, Port(5432)), (OTHER, DB, Port(1)), (DB, OUTSIDE, Port(443))]) == [
        True,
        True,
        True,
    ]


def test_default_deny_blocks_both_directions_but_only_in_its_namespace() -> None:
    ps = PolicySet([DENY_ALL])
    assert table(
        ps,
        [
            (WEB, DB, Port(5432)),  # both selected: egress and ingress denied
            (OTHER, DB, Port(5432)),  # ingress to db denied
            (WEB, OTHER, Port(8080)),  # egress from web denied
            (OTHER, OUTSIDE, Port(443)),  # other namespace: unrestricted
        ],
    ) == [False, False, False, True]
    verdict = ps.evaluate(WEB, DB, Port(5432))
    assert not verdict.egress.allowed and not verdict.ingress.allowed
    assert "deny" in verdict.reason


def test_ingress_ports_by_number_name_and_range() -> None:
    ps = PolicySet(
        [
            DENY_ALL,
            np("allow-egress", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}),
            np(
                "db-in",
                {
                    "podSelector": {"matchLabels": {"app": "db"}},
                    "ingress": [
                        {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "pg"}]}
                    ],
                },
            ),
            np(
                "web-in",
                {
                    "podSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [{"ports": [{"port": 8000, "endPort": 8100}]}],
                },
            ),
        ]
    )
    assert table(
        ps,
        [
            (WEB, DB, Port(5432)),  # named port pg = 5432
            (WEB, DB, Port(5433)),  # not that port
            (WEB, DB, Port(5432, "UDP")),  # not that protocol
            (DB, WEB, Port(8080)),  # in the range, from anyone
            (DB, WEB, Port(8200)),  # outside the range
            (OTHER, DB, Port(5432)),  # web in another namespace: podSelector is namespace-local
        ],
    ) == [True, False, False, True, False, False]


def test_namespace_selectors_with_and_without_pod_selector() -> None:
    ps = PolicySet(
        [
            np(
                "from-monitoring",
                {
                    "podSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [
                        {
                            "from": [
                                {
                                    "namespaceSelector": {
                                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                                    }
                                }
                            ]
                        }
                    ],
                },
            ),
            np(
                "db-from-web-anywhere",
                {
                    "podSelector": {"matchLabels": {"app": "db"}},
                    "ingress": [
                        {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}]}
                    ],
                },
            ),
            np(
                "by-custom-label",
                {
                    "podSelector": {"matchLabels": {"app": "web"}},
                    "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]}],
                },
            ),
        ]
    )
    assert table(
        ps,
        [
            (MONITOR, WEB, Port(8080)),  # namespace matches
            (OTHER, WEB, Port(8080)),  # other namespace
            (OTHER, DB, Port(5432)),  # any namespace, pod label web
            (MONITOR, DB, Port(5432)),  # any namespace, but not a web pod
        ],
    ) == [True, False, True, False]
    # a namespace that carries the custom label matches the third policy
    labelled = Pod("prom", "metrics", {"app": "prometheus"}, namespace_labels={"name": "monitoring"})
    assert ps.evaluate(labelled, WEB, Port(8080)).allowed


def test_egress_only_policy_leaves_ingress_open() -> None:
    rules = [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": 5432}]}]
    ps = PolicySet(
        [
            np(
                "web-out",
                {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"], "egress": rules},
            )
        ]
    )
    assert table(
        ps,
        [
            (WEB, DB, Port(5432)),
            (WEB, DB, Port(22)),
            (WEB, OUTSIDE, Port(443)),
            (OTHER, WEB, Port(8080)),  # ingress to web: no ingress policy
        ],
    ) == [True, False, False, True]


def test_without_policy_types_an_egress_policy_also_denies_ingress() -> None:
    """The API default: policyTypes = [Ingress] (+ Egress when spec.egress exists), so ingress is denied."""
    rules = [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]
    ps = PolicySet([np("web-out", {"podSelector": {"matchLabels": {"app": "web"}}, "egress": rules})])
    assert ps.policies[0].types == frozenset({"Ingress", "Egress"})
    assert table(ps, [(WEB, DB, Port(5432)), (OTHER, WEB, Port(8080))]) == [True, False]


def test_dns_needs_its_own_egress_rule() -> None:
    dns = np(
        "dns",
        {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [
                        {
                            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                        }
                    ],
                    "ports": [{"protocol": "UDP", "port": 53}],
                }
            ],
        },
    )
    assert PolicySet([DENY_ALL]).dns_allowed(WEB) == {"UDP": False, "TCP": False}
    assert PolicySet([DENY_ALL, dns]).dns_allowed(WEB) == {"UDP": True, "TCP": False}
    assert [p.protocol for p in DNS_PORTS] == ["UDP", "TCP"]


def test_ipblock_with_except_matches_outside_addresses_only() -> None:
    ps = PolicySet(
        [
            np(
                "out",
                {
                    "podSelector": {},
                    "policyTypes": ["Egress"],
                    "egress": [
                        {
                            "to": [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}}],
                            "ports": [{"port": 9092}],
                        }
                    ],
                },
            )
        ]
    )
    assert table(
        ps,
        [
            (WEB, BROKER, Port(9092)),
            (WEB, External("excepted", "192.0.2.200"), Port(9092)),
            (WEB, OUTSIDE, Port(9092)),
            (WEB, DB, Port(9092)),  # ipBlock never matches a pod here
        ],
    ) == [True, False, False, False]
    assert ps.external_cidrs(WEB, Port(9092)) == ["192.0.2.0/24"]
    assert ps.external_cidrs(WEB, Port(80)) == []


def test_match_expressions() -> None:
    ps = PolicySet(
        [
            np(
                "expr",
                {
                    "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]},
                    "ingress": [
                        {
                            "from": [
                                {
                                    "podSelector": {
                                        "matchExpressions": [
                                            {"key": "app", "operator": "NotIn", "values": ["web"]},
                                            {"key": "tier", "operator": "DoesNotExist"},
                                        ]
                                    }
                                }
                            ]
                        }
                    ],
                },
            )
        ]
    )
    other_app = Pod("batch", NS, {"app": "batch"})
    tiered = Pod("batch2", NS, {"app": "batch", "tier": "x"})
    assert table(
        ps, [(WEB, DB, Port(5432)), (other_app, DB, Port(5432)), (tiered, DB, Port(5432)), (DB, WEB, Port(8080))]
    ) == [False, True, False, True]


def test_truth_table_api() -> None:
    ps = PolicySet([DENY_ALL])
    tt = ps.truth_table([WEB, DB], [(DB, [Port(5432)]), (WEB, [Port(8080)])])
    assert tt.as_dict() == {("web", "db", 5432, "TCP"): False, ("db", "web", 8080, "TCP"): False}
    assert tt.allowed("web", "db", 5432) is False
    assert "deny" in tt.render()
    with pytest.raises(KeyError):
        tt.allowed("db", "db", 1)


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(PolicyError, match="podSelector"):
        PolicySet([np("bad", {"policyTypes": ["Ingress"]})])
    with pytest.raises(PolicyError, match="policyTypes"):
        PolicySet([np("bad", {"podSelector": {}, "policyTypes": ["Sideways"]})])


def test_the_guides_policy_blocks_dns_and_ingress() -> None:
    """tests/deploy/fixtures/guide_networkpolicy.yaml, verbatim: DNS to kube-system and ingress-nginx blocked."""
    doc = yaml.safe_load(
        (Path(__file__).parents[1] / "deploy" / "fixtures" / "guide_networkpolicy.yaml").read_text()
    )
    ps = PolicySet([doc], default_namespace="somabrain-prod")
    api = Pod("somabrain", "somabrain-prod", {"app": "somabrain"})
    redis = Pod("sb-redis", "somabrain-prod", {"app": "sb-redis"})
    ingress = Pod("ingress-nginx", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
    assert ps.dns_allowed(api, KUBE_DNS) == {"UDP": False, "TCP": False}
    assert not ps.allows(ingress, api, 9696)
    # its `name` namespace label is not set by Kubernetes, so even in-namespace traffic is blocked
    assert not ps.allows(api, redis, 6379)


# --- the live verdicts: three outcomes per cell ---------------------------------------------------------
def _tcp(host: str, status: str) -> Any:
    from targets.base import TcpResult

    return TcpResult(host, 6379, status)


@pytest.mark.parametrize(("results", "verdict"), [
    ([("sb_redis", "connected"), ("172.18.0.3", "connected")], True),
    ([("sb_redis", "unresolved"), ("172.18.0.3", "timeout")], False),
    ([("sb_redis", "unresolved"), ("172.18.0.3", "refused")], None),
    ([("sb_redis", "refused"), ("172.18.0.3", "timeout")], None),
    ([("sb_redis", "unresolved")], None),
])
def test_dev_cell_denied_only_on_unresolved_and_timeouts(results: list[tuple[str, str]], verdict: bool | None) -> None:
    from conformance.netpol.verdicts import dev_verdict

    assert dev_verdict([_tcp(h, s) for h, s in results], "sb_redis")[0] is verdict


@pytest.mark.parametrize(("status", "verdict"), [("connected", True), ("timeout", False), ("refused", None),
                                                 ("unresolved", None), ("error", None)])
def test_cluster_cell_denied_only_on_a_timeout(status: str, verdict: bool | None) -> None:
    from conformance.netpol.verdicts import cluster_verdict

    assert cluster_verdict(_tcp("sb-redis.somabrain-prod.svc.cluster.local", status))[0] is verdict
