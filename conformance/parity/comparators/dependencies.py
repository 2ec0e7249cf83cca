"""Dimension `dependencies`: compose `depends_on` <-> k8s initContainers or readiness gating.

A prod edge A -> B exists when an initContainer of A names B's Service, when B is a one-shot compose service whose
prod counterpart is an initContainer of A (inventory.ONE_SHOTS), or when A has a readiness probe and one of its
environment URLs points at B (A is not Ready, so gets no traffic, until it reaches B).
An external service (Kafka) is recognised by the first label of the URL's host naming it.
Dev edges must wait for health (`service_healthy`), as readiness does."""

from __future__ import annotations

import re

from conformance.inventory import ONE_SHOTS
from conformance.parity.context import Pair, ParityContext
from conformance.parity.findings import Finding, drift, ok

DIM = "dependencies"
HEALTHY = ("service_healthy", "service_completed_successfully")


def _prod_edges(ctx: ParityContext, pair: Pair) -> dict[str, str]:
    edges: dict[str, str] = {}
    wl, container = pair.workload, pair.container
    if wl is None or container is None:
        return edges
    for init in wl.init_containers:
        text = " ".join([*init.command, *init.args, *(e.value for e in init.env.values())])
        tokens = re.split(r"[\s/:@'\"]+", text)
        for other in ctx.pairs:
            if other is not pair and any(
                tok == svc or tok.startswith(svc + ".") for svc in other.service.k8s_services for tok in tokens
            ):
                edges[other.name] = f"initContainer {init.name}"
    for one in ONE_SHOTS:
        if pair.service.key in one.of and any(init.name == one.init_container for init in wl.init_containers):
            edges[one.compose] = f"initContainer {one.init_container}"
    readiness = container.probes.get("readiness")
    if readiness:
        for env in container.env.values():
            ep = ctx.prod_endpoint(env.template, wl.namespace)
            if ep is None:
                continue
            target = ep.service
            if ep.external:
                target = next(
                    (
                        p.name
                        for p in ctx.pairs
                        if p.service.outside and p.dev is not None and p.name in ep.host.split(".")[0]
                    ),
                    None,
                )
            if target and target != pair.name:
                edges.setdefault(target, f"readiness gate via {env.name}")
    return edges


def compare(ctx: ParityContext) -> list[Finding]:
    out: list[Finding] = []
    for pair in ctx.in_both:
        assert pair.dev is not None
        dev_edges = pair.dev.depends_on
        prod_edges = _prod_edges(ctx, pair)
        for target in sorted(set(dev_edges) | set(prod_edges)):
            subject = f"{pair.name}->{target}"
            dev = f"depends_on {dev_edges[target]}" if target in dev_edges else None
            prod = prod_edges.get(target)
            if dev is None:
                out.append(drift(DIM, subject, None, prod, "prod waits for it, dev does not"))
            elif prod is None:
                out.append(
                    drift(
                        DIM,
                        subject,
                        dev,
                        None,
                        "dev waits for it, prod neither has an initContainer nor readiness that depends on it",
                    )
                )
            elif dev_edges[target] not in HEALTHY:
                out.append(drift(DIM, subject, dev, prod, "dev starts before the dependency is healthy"))
            else:
                out.append(ok(DIM, subject, dev, prod))
    return out
