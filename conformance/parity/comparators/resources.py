"""Dimension `resources`: the compose limit lies between the k8s request and limit (inclusive).

Dev gets at least what prod guarantees and never more than prod allows, so a workload that fits in dev
fits in prod and a load test in dev means something for prod."""

from __future__ import annotations

from conformance.loaders.units import format_bytes, format_cpu, k8s_quantity
from conformance.parity.context import ParityContext
from conformance.parity.findings import Finding, drift, ok

DIM = "resources"


def compare(ctx: ParityContext) -> list[Finding]:
    out: list[Finding] = []
    for pair in ctx.in_both:
        assert pair.dev is not None and pair.container is not None
        for key, dev_value, fmt in (
            ("memory", pair.dev.mem_limit, format_bytes),
            ("cpu", pair.dev.cpus, format_cpu),
        ):
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
                out.append(drift(DIM, subject, dev_text, prod_text, f"no {missing}"))
                continue
            try:
                limit, request = k8s_quantity(limit_text), k8s_quantity(request_text)
            except ValueError as exc:
                out.append(drift(DIM, subject, dev_text, prod_text, str(exc)))
                continue
            if dev_value < request:
                out.append(drift(DIM, subject, dev_text, prod_text, "dev limit is below the prod request"))
            elif dev_value > limit:
                out.append(drift(DIM, subject, dev_text, prod_text, "dev limit is above the prod limit"))
            else:
                out.append(ok(DIM, subject, dev_text, prod_text))
    return out
