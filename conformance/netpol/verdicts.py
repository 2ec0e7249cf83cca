"""What one live probe of a truth-table cell shows: allowed, denied, or inconclusive (None, which fails the check).

Only what a policy does counts as denied: a timeout in the cluster (kube-router drops the packets; the ICMP
port-unreachable it would send is dropped too, see scripts/cluster/net.sh), an unresolved name plus timeouts in
compose (Docker's DNS answers only on shared networks, and the isolation rules drop the rest).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from targets.base import TcpResult


def cluster_verdict(result: Any) -> tuple[bool | None, str]:
    """Three outcomes for a cluster probe: connected (allowed), timed out (a policy dropped it: denied), anything
    else (inconclusive, which fails the check). A refused connection is a TCP reset: something answered, so it
    says nothing about a policy; an unresolved name or another error says nothing either."""
    if not isinstance(result, TcpResult):
        return None, f"inconclusive: {result}"
    if result.ok:
        return True, f"{result.host}: {result.status}"
    if result.status == "timeout":
        return False, f"{result.host}: timeout"
    return None, f"inconclusive: {result.host}: {result.status} (only a timeout shows a policy at work)"


def dev_verdict(results: Sequence[Any], name: str) -> tuple[bool | None, str]:
    """Three outcomes for a dev cell, probed by the service's name and by each of its container addresses:
    connected to any (allowed); the name unresolved (Docker's DNS answers only on shared networks) and every address
    timed out (the isolation rules drop the packets: denied); anything else (a refusal or an error says nothing
    about isolation: inconclusive, which fails the check)."""
    tcp = [r for r in results if isinstance(r, TcpResult)]
    shown = ", ".join(f"{r.host}: {r.status}" for r in tcp)
    if any(r.ok for r in tcp):
        return True, shown
    by_name = [r for r in tcp if r.host == name]
    by_address = [r for r in tcp if r.host != name]
    if by_address and all(r.status == "timeout" for r in by_address) \
            and all(r.status in ("unresolved", "timeout") for r in by_name):
        return False, shown
    return None, f"inconclusive: {shown or 'nothing probed'} (only an unresolved name and timeouts show isolation)"
