"""Dimension `connectivity`: compose networks <-> the NetworkPolicy truth table.

Dev: A reaches B:p when they share a network (Docker does not filter ports). Prod: the NetworkPolicy
evaluator, for the mapped workloads (external services through their peer in the inventory, Kafka
through the egress ipBlocks). For every ordered pair and every port B serves or A uses:
- same verdict -> ok;
- allowed in prod, blocked in dev -> drift;
- allowed in dev, blocked in prod -> ok when prod allows some flow between the two, on any port and in either
  direction (compose networks filter neither: sharing one for B -> A:q opens A -> B:p too), else drift. This is
  incidental reachability (the compose backends share `data` by choice; none of them connects to the others): an
  exception may accept it.
Plus, per workload: DNS to kube-dns (53/UDP and TCP; Docker's embedded DNS always answers in dev), the
ingress controller to each Ingress backend, and outside clients to each LoadBalancer Service.

A flow the services *use*, blocked in prod, is a hard finding that no exception can accept: prod would fail
where dev works. The used flows are derived from configuration, not from the network graph: an environment
URL of A pointing at B:p (SOMABRAIN_*_URL, DSNs), the scrape (the dev Prometheus' static targets, and the
ServiceMonitors when the manifests have them), DNS, the ingress controller to an Ingress backend and clients
to a LoadBalancer Service. A used flow blocked in dev only is ordinary drift (dev is broken, not prod)."""

from __future__ import annotations

from typing import Any

import yaml

from conformance.inventory import INGRESS_CONTROLLER
from conformance.netpol import KUBE_DNS, External, Pod, PolicyError, PolicySet, Port
from conformance.parity.context import Pair, ParityContext, dev_ports, host_path
from conformance.parity.findings import Finding, drift, hard_drift, ok

DIM = "connectivity"
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"  # the image's default --config.file
# A client of a LoadBalancer Service: an address outside the cluster (TEST-NET-3, RFC 5737).
LOAD_BALANCER_CLIENT = External("load-balancer client", "203.0.113.10")


def _word(allowed: bool) -> str:
    return "allowed" if allowed else "blocked"


def compare(ctx: ParityContext) -> list[Finding]:
    namespace = next((p.workload.namespace for p in ctx.pairs if p.workload), "default")
    try:
        policies = PolicySet.from_manifests(ctx.k8s.resources, namespace)
    except PolicyError as exc:
        return [drift(DIM, "networkpolicies", None, str(exc), "the evaluator cannot read a policy")]
    present = [p for p in ctx.pairs if p.dev is not None and (p.container is not None or p.service.outside)]
    needed = _needed(ctx, present)
    out: list[Finding] = []
    verdicts: dict[tuple[str, str, int], tuple[bool, bool]] = {}
    for a in present:
        src = ctx.prod_pod(a)
        if src is None:
            continue  # an external service without a peer (Kafka) does not open connections to us
        for b in present:
            if a is b:
                continue
            for port in _ports(ctx, b, a, needed):
                dev_ok = bool(set(a.dev.networks) & set(b.dev.networks))  # type: ignore[union-attr]
                prod_ok = _prod_allows(ctx, policies, src, b, port)
                verdicts[(a.name, b.name, port)] = (dev_ok, prod_ok)
    for (a_name, b_name, port), (dev_ok, prod_ok) in sorted(verdicts.items()):
        subject = f"{a_name}->{b_name}:{port}"
        need = needed.get((a_name, b_name, port))
        dev, prod = _word(dev_ok), _word(prod_ok)
        if need and not prod_ok:
            out.append(hard_drift(DIM, subject, dev, prod, f"used ({need}) but blocked in prod"))
        elif need and not dev_ok:
            out.append(drift(DIM, subject, dev, prod, f"used ({need}) but blocked in dev"))
        elif dev_ok == prod_ok:
            out.append(ok(DIM, subject, dev, prod, f"used: {need}" if need else None))
        elif prod_ok:
            out.append(drift(DIM, subject, dev, prod, "prod allows it, dev has no shared network"))
        elif any(v[1] for k, v in verdicts.items() if {k[0], k[1]} == {a_name, b_name}):
            out.append(ok(DIM, subject, dev, prod, "compose networks filter neither ports nor direction, and prod "
                          "allows another flow between these two"))
        else:
            out.append(drift(DIM, subject, dev, prod, "dev connects services that prod isolates"))
    out.extend(_dns(ctx, policies))
    out.extend(_from_outside(ctx, policies))
    return out


def _needed(ctx: ParityContext, present: list[Pair]) -> dict[tuple[str, str, int], str]:
    """The flows the services use, (client, server, port) -> what uses it (see the module docstring)."""
    needed: dict[tuple[str, str, int], str] = {}
    for a in present:
        if a.dev is None:
            continue
        for name, var in a.dev.environment.items():
            ep = ctx.dev_endpoint(var.value.raw, var.value.value)
            if ep and ep.service and ep.service != a.name and ep.port:
                needed[(a.name, ep.service, ep.port)] = name
    monitoring = next((p for p in present if p.service.peer is not None), None)
    if monitoring is not None:
        needed.update(_scrape_targets(ctx, monitoring))
        needed.update(_servicemonitor_targets(ctx, monitoring, present))
    return needed


def _scrape_targets(ctx: ParityContext, monitoring: Pair) -> dict[tuple[str, str, int], str]:
    """The dev Prometheus' static scrape targets that are compose services. Without a readable config there are
    none: checking that file is `promtool check config`'s business (tests/deploy/test_prometheus_config.py)."""
    assert monitoring.dev is not None
    flag = next((c for c in monitoring.dev.command if c.startswith("--config.file=")), None)
    path = host_path(monitoring.dev, flag.split("=", 1)[1] if flag else PROMETHEUS_CONFIG)
    try:
        config: Any = yaml.safe_load(path.read_text(encoding="utf-8")) if path else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    found: dict[tuple[str, str, int], str] = {}
    for job in (config or {}).get("scrape_configs") or []:
        for static in job.get("static_configs") or []:
            for target in static.get("targets") or []:
                host, _, port = str(target).rpartition(":")
                service = ctx.dev_host(host)
                if service and service != monitoring.name and port.isdigit():
                    found[(monitoring.name, service, int(port))] = f"scrape job {job.get('job_name')}"
    return found


def _servicemonitor_targets(
    ctx: ParityContext, monitoring: Pair, present: list[Pair]
) -> dict[tuple[str, str, int], str]:
    found: dict[tuple[str, str, int], str] = {}
    for sm in ctx.k8s.of_kind("ServiceMonitor"):
        selector = ((sm.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        for svc in ctx.k8s.services.values():
            if not selector or svc.name not in {
                r["metadata"]["name"]
                for r in ctx.k8s.of_kind("Service")
                if selector.items() <= (r["metadata"].get("labels") or {}).items()
            }:
                continue
            target = next((p for p in present if svc.name in p.service.k8s_services), None)
            if target is None or target.container is None:
                continue
            for ep in (sm.get("spec") or {}).get("endpoints") or []:
                sp = next((s for s in svc.ports if s.name == ep.get("port")), None)
                number = target.container.port_number(sp.target) if sp else None
                if number:
                    found[(monitoring.name, target.name, number)] = f"ServiceMonitor {sm['metadata']['name']}"
    return found


def _ports(ctx: ParityContext, b: Pair, a: Pair, needed: dict[tuple[str, str, int], str]) -> list[int]:
    wanted = {port for (src, dst, port) in needed if src == a.name and dst == b.name}
    peer = b.service.peer
    if b.service.outside and peer is None:
        return sorted(wanted)  # outside the cluster: only the ports clients use
    served = set(dev_ports(b.dev)) if b.dev else set()
    if b.container is not None:
        served |= {p.number for p in b.container.ports}
    elif peer is not None:
        served |= {p.number for p in peer.ports}
    return sorted(served | wanted)


def _prod_allows(ctx: ParityContext, policies: PolicySet, src: Pod, b: Pair, port: int) -> bool:
    dst = ctx.prod_pod(b)
    if dst is not None:
        return policies.allows(src, dst, port)
    # outside the cluster, without a peer: some ipBlock must admit it (or egress is unrestricted)
    return policies.egress_unrestricted(src) or bool(policies.external_cidrs(src, Port(port)))


def _dns(ctx: ParityContext, policies: PolicySet) -> list[Finding]:
    out: list[Finding] = []
    for pair in ctx.in_both:
        pod = ctx.prod_pod(pair)
        assert pod is not None
        for proto, allowed in policies.dns_allowed(pod, KUBE_DNS).items():
            subject = f"{pair.name}->dns:53/{proto}"
            dev = "allowed (Docker embedded DNS)"
            if allowed:
                out.append(ok(DIM, subject, dev, "allowed"))
            else:
                out.append(
                    hard_drift(DIM, subject, dev, "blocked", "pods cannot resolve names: DNS to kube-system is blocked")
                )
    return out


def _from_outside(ctx: ParityContext, policies: PolicySet) -> list[Finding]:
    out: list[Finding] = []
    backends: list[tuple[str, str, object, int]] = []  # (client label, service name, client, service port)
    for ing in ctx.k8s.of_kind("Ingress"):
        for rule in (ing.get("spec") or {}).get("rules") or []:
            for path in ((rule.get("http") or {}).get("paths")) or []:
                svc = ((path.get("backend") or {}).get("service")) or {}
                port = (svc.get("port") or {}).get("number")
                if svc.get("name") and port:
                    backends.append(("ingress-nginx", svc["name"], INGRESS_CONTROLLER, int(port)))
    for svc in ctx.k8s.services.values():
        if svc.type in ("LoadBalancer", "NodePort"):
            for sp in svc.ports:
                backends.append(("load-balancer", svc.name, LOAD_BALANCER_CLIENT, sp.port))
    for label, svc_name, client, port in backends:
        svc = ctx.k8s.services.get(svc_name)
        pair = next((p for p in ctx.in_both if svc_name in p.service.k8s_services), None)
        if svc is None or pair is None or pair.container is None:
            continue
        backend = next((s for s in svc.ports if s.port == port), None)
        target = pair.container.port_number(backend.target) if backend else None
        if target is None:
            continue
        pod = ctx.prod_pod(pair)
        assert pod is not None and pair.dev is not None
        allowed = policies.allows(client, pod, target)  # type: ignore[arg-type]
        published = next((m for m in pair.dev.ports if m.target == target and m.published_declared), None)
        dev = (
            f"published on {published.host_ip or '0.0.0.0'}:{published.published_declared}"
            if published
            else "not published"
        )
        subject = f"{label}->{svc_name}:{port}"
        prod = f"{_word(allowed)} (to {pair.name}:{target})"
        if published and allowed:
            out.append(ok(DIM, subject, dev, prod))
        elif not allowed:
            out.append(hard_drift(DIM, subject, dev, prod, f"the NetworkPolicies block {label} traffic to {pair.name}"))
        else:
            out.append(drift(DIM, subject, dev, prod, "reachable from outside in prod, not published in dev"))
    return out
