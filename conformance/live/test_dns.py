"""DNS: every service name of the seed's matrix resolves from the API workload, and the resolved endpoint
accepts TCP on its port. In prod, each Service also has ready Endpoints.

dev names are compose service names (`sb_redis`); prod names are cluster FQDNs
(`sb-redis.somabrain-prod.svc.cluster.local`). Services outside the cluster in prod (Kafka, Prometheus)
are skipped there by name.
"""

from __future__ import annotations

from typing import Any

import pytest

from conformance.inventory import API, SEED, Service
from conformance.live.plugin import Check
from targets.base import Probe, ResolveResult, Target, TcpResult

pytestmark = pytest.mark.dns
CHECKED = [s for s in SEED if s.key != API.key]  # seen from the API workload


def _skip_outside(service: Service, env: str) -> str:
    host = service.host(env, "x")
    if host is None:
        pytest.skip(f"{service.key} is outside the cluster in {env} (seed: external), so it has no cluster DNS name")
    return host


@pytest.fixture(scope="session")
def dns_probes(target: Target, env: str, settings: Any) -> dict[str, tuple[ResolveResult, TcpResult]]:
    """Resolve every name and connect to every port from the API workload, in one exec."""
    namespace = getattr(target, "namespace", None)
    hosts = [(s, s.host(env, namespace) if namespace else s.host(env)) for s in CHECKED]
    wanted = [(s, h) for s, h in hosts if h is not None]
    probes = [p for s, h in wanted for p in (Probe.resolve(h), Probe.tcp(h, s.port, timeout=2.0, attempts=2))]
    results = target.run_probes(API.key, probes)
    out = {}
    for index, (service, _host) in enumerate(wanted):
        resolved, tcp = results[2 * index], results[2 * index + 1]
        assert isinstance(resolved, ResolveResult) and isinstance(tcp, TcpResult)
        out[service.key] = (resolved, tcp)
    return out


@pytest.mark.parametrize("service", CHECKED, ids=lambda s: s.key)
def test_resolves(service: Service, env: str, dns_probes: dict[str, Any], check: Check) -> None:
    host = _skip_outside(service, env)
    resolved, _ = dns_probes[service.key]
    check.subject = service.key
    check.expected = {"name": resolved.name, "resolves": True}
    check.observed = {"name": resolved.name, "addresses": list(resolved.addresses), "error": resolved.error or None}
    assert resolved.ok and resolved.addresses, (
        f"{resolved.name} does not resolve from the {API.key} workload: {resolved.error}")
    assert host


@pytest.mark.parametrize("service", CHECKED, ids=lambda s: s.key)
def test_accepts_tcp(service: Service, env: str, dns_probes: dict[str, Any], check: Check) -> None:
    _skip_outside(service, env)
    _, tcp = dns_probes[service.key]
    check.expected = {"connect": f"{tcp.host}:{tcp.port}", "status": "connected"}
    check.observed = {"connect": f"{tcp.host}:{tcp.port}", "status": tcp.status, "address": tcp.address or None,
                      "error": tcp.error or None}
    assert tcp.ok, (f"{tcp.host}:{tcp.port} from the {API.key} workload: {tcp.status} after {tcp.attempts} "
                    f"attempt(s) {tcp.error}".rstrip())


@pytest.mark.environments("prod")
@pytest.mark.parametrize("service", CHECKED, ids=lambda s: s.key)
def test_endpoints_not_empty(service: Service, env: str, target: Target, check: Check) -> None:
    """prod only (the environments mark deselects it in dev, where the container check is test_accepts_tcp)."""
    _skip_outside(service, env)
    state, = target.serving([service]).states
    check.expected = {"service": service.k8s_service, "ready_addresses": ">= 1"}
    check.observed = {"service": service.k8s_service, "ready_addresses": list(state.addresses),
                      "state": state.message}
    assert state.addresses, f"{state.message} (its pods are missing or not Ready)"
