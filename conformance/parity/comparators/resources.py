"""Dimension `resources`: the compose limit lies between the k8s request and limit (inclusive).

Dev gets at least what prod guarantees and never more than prod allows, so a workload that fits in dev
fits in prod and a load test in dev means something for prod.

A prod limit below the dev limit (memory or CPU) is a hard finding that no exception can accept: prod would
OOM-kill or throttle what runs fine in dev, so nothing dev shows holds for prod. A dev limit below the prod
request (dev is the tighter one) and a side without a limit (nothing to compare) are ordinary drift, which an
exception may accept; it pins both values, so a later change of the k8s request or limit is reported again."""

from __future__ import annotations

from collections.abc import Callable

from conformance.loaders.units import format_bytes, format_cpu, k8s_quantity
from conformance.parity.context import Pair, ParityContext
from conformance.parity.findings import Finding, drift, hard_drift, ok

DIM = "resources"


def compare(ctx: ParityContext) -> list[Finding]:
    out: list[Finding] = []
    for pair in ctx.in_both:
        assert pair.dev is not None
        out.append(_one(pair, "memory", pair.dev.mem_limit, format_bytes))
        out.append(_one(pair, "cpu", pair.dev.cpus, format_cpu))
    return out


def _one(pair: Pair, key: str, dev_value: float | None, fmt: Callable[[float], str]) -> Finding:
    assert pair.container is not None
    subject = f"{pair.name}/{key}"
    limit_text = pair.container.limits.get(key)
    request_text = pair.container.requests.get(key, limit_text)
    dev_text = f"limit {fmt(dev_value)}" if dev_value is not None else None
    prod_text = (
        f"request {request_text}, limit {limit_text}"
        if limit_text
        else (f"request {request_text}" if request_text else None)
    )
    if dev_value is None or limit_text is None or request_text is None:
        missing = "compose limit" if dev_value is None else "k8s limit"
        return drift(DIM, subject, dev_text, prod_text, f"no {missing}")
    try:
        limit, request = k8s_quantity(limit_text), k8s_quantity(request_text)
    except ValueError as exc:
        return drift(DIM, subject, dev_text, prod_text, str(exc))
    if limit < dev_value:
        why = f"the prod limit {limit_text} is below the dev limit {fmt(dev_value)}: prod would cut what dev runs with"
        return hard_drift(DIM, subject, dev_text, prod_text, why)
    if dev_value < request:
        return drift(DIM, subject, dev_text, prod_text, "dev limit is below the prod request")
    return ok(DIM, subject, dev_text, prod_text)
