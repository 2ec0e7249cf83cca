"""Dimension `ports`: container ports, Service ports and targetPorts, published ports; every Service
selects a pod and every targetPort exists; Ingress and ServiceMonitor references land on real ports."""

from __future__ import annotations

from conformance.loaders.k8s import K8sService, Workload
from conformance.parity.context import ParityContext, dev_ports
from conformance.parity.findings import Finding, drift, ok

DIM = "ports"


def _fmt(ports: list[int]) -> str:
    return ", ".join(map(str, ports)) or "none"


def compare(ctx: ParityContext) -> list[Finding]:
    out: list[Finding] = []
    for pair in ctx.in_both:
        assert pair.dev is not None and pair.container is not None
        dports = dev_ports(pair.dev)
        pports = sorted({p.number for p in pair.container.ports})
        if dports == pports:
            out.append(ok(DIM, f"{pair.name}/container-ports", _fmt(dports), _fmt(pports)))
        else:
            out.append(
                drift(DIM, f"{pair.name}/container-ports", _fmt(dports), _fmt(pports), "container ports differ")
            )
        primary = ctx.k8s.services.get(pair.service.k8s_service or "")
        if primary is not None:
            sports = sorted(p.port for p in primary.ports)
            dev = f"{pair.name}:{_fmt(dports)}"
            prod = f"{primary.name}:{_fmt(sports)}"
            if dports == sports:
                out.append(ok(DIM, f"{pair.name}/service-ports", dev, prod))
            else:
                out.append(
                    drift(DIM, f"{pair.name}/service-ports", dev, prod, "the in-network port clients use differs")
                )
        for mapping in pair.dev.ports:
            if mapping.published_declared is None:
                continue
            by_target = next(
                (
                    sp.port
                    for s in _services_of(ctx, pair.workload)
                    for sp in s.ports
                    if _target(pair.workload, sp.target) == mapping.target
                ),
                None,
            )
            dev = f"{mapping.host_ip or '0.0.0.0'}:{mapping.published_declared}->{mapping.target}"
            prod = f"Service port {by_target}" if by_target is not None else "not exposed"
            if by_target is not None and str(by_target) == mapping.published_declared:
                out.append(ok(DIM, f"{pair.name}/published-{mapping.target}", dev, prod))
            else:
                out.append(
                    drift(
                        DIM,
                        f"{pair.name}/published-{mapping.target}",
                        dev,
                        prod,
                        "the host port differs from the port the Service exposes",
                    )
                )
    for svc in ctx.k8s.services.values():
        out.extend(_service_invariants(ctx, svc))
    out.extend(_ingress_backends(ctx))
    out.extend(_servicemonitors(ctx))
    return out


def _services_of(ctx: ParityContext, workload: Workload | None) -> list[K8sService]:
    return ctx.k8s.services_selecting(workload) if workload else []


def _target(workload: Workload | None, target: int | str) -> int | None:
    if workload is None:
        return None
    for container in workload.containers:
        number = container.port_number(target)
        if number is not None and any(p.number == number for p in container.ports):
            return number
    return None


def _service_invariants(ctx: ParityContext, svc: K8sService) -> list[Finding]:
    selected = [
        w
        for w in ctx.k8s.workloads.values()
        if w.namespace == svc.namespace and svc.selector and svc.selector.items() <= w.labels.items()
    ]
    subject = f"service/{svc.name}"
    if not selected:
        return [drift(DIM, subject, None, f"selector {svc.selector}", "the Service selects no pod")]
    out = [ok(DIM, subject, None, f"selects {', '.join(w.name for w in selected)}")]
    for sp in svc.ports:
        resolved = [_target(w, sp.target) for w in selected]
        prod = f"{sp.port} -> targetPort {sp.target}"
        if any(r is None for r in resolved):
            out.append(
                drift(DIM, f"{subject}:{sp.port}", None, prod, "targetPort is not a container port of the pod")
            )
        else:
            out.append(ok(DIM, f"{subject}:{sp.port}", None, f"{prod} ({resolved[0]})"))
    return out


def _ingress_backends(ctx: ParityContext) -> list[Finding]:
    out: list[Finding] = []
    for ing in ctx.k8s.of_kind("Ingress"):
        for rule in (ing.get("spec") or {}).get("rules") or []:
            for path in ((rule.get("http") or {}).get("paths")) or []:
                backend = (path.get("backend") or {}).get("service") or {}
                name = backend.get("name")
                port = backend.get("port") or {}
                subject = f"ingress/{ing['metadata']['name']}{path.get('path', '')}"
                prod = f"{name}:{port.get('number', port.get('name'))}"
                svc = ctx.k8s.services.get(str(name))
                if svc is None:
                    out.append(drift(DIM, subject, None, prod, "backend Service does not exist"))
                elif not any(
                    sp.port == port.get("number") or (sp.name and sp.name == port.get("name")) for sp in svc.ports
                ):
                    out.append(drift(DIM, subject, None, prod, "backend port is not a port of the Service"))
                else:
                    out.append(ok(DIM, subject, None, prod))
    return out


def _servicemonitors(ctx: ParityContext) -> list[Finding]:
    out: list[Finding] = []
    for sm in ctx.k8s.of_kind("ServiceMonitor"):
        spec = sm.get("spec") or {}
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        svcs = [
            r
            for r in ctx.k8s.of_kind("Service")
            if selector and selector.items() <= (r["metadata"].get("labels") or {}).items()
        ]
        for ep in spec.get("endpoints") or []:
            subject = f"servicemonitor/{sm['metadata']['name']}"
            prod = f"port {ep.get('port')} {ep.get('path', '/metrics')}"
            names = {p.get("name") for s in svcs for p in (s.get("spec") or {}).get("ports") or []}
            if not svcs:
                out.append(drift(DIM, subject, None, prod, "selects no Service"))
            elif ep.get("port") not in names:
                out.append(drift(DIM, subject, None, prod, "port name is not a port of the selected Service"))
            else:
                out.append(ok(DIM, subject, None, prod))
    return out
