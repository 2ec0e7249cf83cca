"""NetworkPolicy evaluator: who may talk to whom, on which port, and why.

    from conformance.netpol import PolicySet, Pod, External, Port, KUBE_DNS
    policies = PolicySet.from_manifests(resources)
    policies.evaluate(Pod("somabrain", "somabrain-prod", {"app": "somabrain"}), KUBE_DNS, Port(53, "UDP"))
    policies.truth_table(sources, [(destination, ports), ...]).render()

Used by the parity gate (connectivity dimension) and by the conformance suite.
"""

from __future__ import annotations

from conformance.netpol.evaluator import PolicyError, PolicySet, TruthTable, selector_matches
from conformance.netpol.model import (
    DNS_PORTS,
    KUBE_DNS,
    NAMESPACE_NAME_LABEL,
    DirectionVerdict,
    Endpoint,
    External,
    Pod,
    Port,
    Verdict,
)

__all__ = [
    "DNS_PORTS",
    "KUBE_DNS",
    "NAMESPACE_NAME_LABEL",
    "DirectionVerdict",
    "Endpoint",
    "External",
    "Pod",
    "PolicyError",
    "PolicySet",
    "Port",
    "TruthTable",
    "Verdict",
    "selector_matches",
]
