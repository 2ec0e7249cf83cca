"""Who is on the other end of a request: the client address for rate limits, and whether the caller is internal.

The address is the TCP peer's, as Hypercorn sees it. `X-Forwarded-For` is a header any client can write, so it is
believed only when the peer is one of the configured trusted proxies (`SOMABRAIN_TRUSTED_PROXIES`, e.g. the
ingress); then the client is the right-most entry that is not itself a trusted proxy, the first hop no proxy of
ours could have been told by the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

from quart import request as quart_request

from brain.web.headers import has_any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_FORWARDING_HEADERS = frozenset({b"x-forwarded-for", b"forwarded", b"x-real-ip"})


def networks(specs: Sequence[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(spec, strict=False) for spec in specs)


@lru_cache(maxsize=1024)
def _parse(value: str | None) -> IPAddress | None:
    """The address `value` names (IPv4-mapped IPv6 as IPv4), or None; cached, since the same peers and proxies
    recur on every request and parsing costs more than the rest of the gate's address check (bounded: a client
    that varies its X-Forwarded-For only evicts entries)."""
    try:
        address = ipaddress.ip_address((value or "").strip())
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:10.0.0.1 is 10.0.0.1
    return mapped if mapped is not None else address


def _trusted(address: IPAddress | None, trusted: Sequence[IPNetwork]) -> bool:
    return address is not None and any(address in network for network in trusted)


def peer_address() -> str:
    """The TCP peer (Hypercorn's `scope["client"]`), or "unknown" for a transport that has none (a Unix socket)."""
    return quart_request.remote_addr or "unknown"


def client_address(trusted: Sequence[IPNetwork]) -> str:
    """The caller's address: the peer, or, when the peer is a trusted proxy, the first untrusted forwarded hop."""
    peer = peer_address()
    if not _trusted(_parse(peer), trusted):
        return peer
    hops = [hop.strip() for hop in quart_request.headers.get("X-Forwarded-For", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(_parse(hop), trusted):
            return hop if _parse(hop) is not None else peer  # an unparseable hop is not an identity
    return peer


def is_internal() -> bool:
    """True for a caller inside the workload: a loopback peer, with no proxy in between.

    Probes, `somabrain doctor` and the conformance suite run inside the API's container (kubectl/docker exec) and
    connect to 127.0.0.1. Everything through the Ingress, the LoadBalancer or a published port arrives from
    another address. A proxy that shares the loopback (a sidecar) adds forwarding headers, so a request that
    carries any is not internal, whoever wrote them.
    """
    return _is_loopback(quart_request.remote_addr) and not has_any(_FORWARDING_HEADERS)


def _is_loopback(peer: str | None) -> bool:
    address = _parse(peer)
    return address is not None and address.is_loopback
