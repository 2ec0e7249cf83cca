"""Dimension `mapping`: every service exists on both sides, through the service inventory (conformance.inventory,
"the mapping table" in the findings), and references resolve. A one-shot compose service (inventory.ONE_SHOTS) is
an initContainer of each workload it names in prod.

References to the Secrets that the operator creates outside the manifests (conformance.expectations.OPERATOR_SECRETS,
scripts/k8s_secrets.sh) resolve as "provided by the operator" (ok). The manifests shipping one of those Secrets is
drift: every `kubectl apply -k` would overwrite the operator's real credentials with the shipped values. A Secret
the operator is asked for that no workload uses is drift too (the list is stale)."""

from __future__ import annotations

from conformance.expectations import OPERATOR_SECRETS, OPERATOR_SECRETS_SCRIPT
from conformance.inventory import BY_KEY, ONE_SHOTS, SERVICES
from conformance.parity.context import ParityContext
from conformance.parity.findings import Finding, drift, ok

DIM = "mapping"


def compare(ctx: ParityContext) -> list[Finding]:
    out: list[Finding] = []
    for pair in ctx.pairs:
        name = pair.name
        dev = f"service {name}" if pair.dev else None
        outside, prod_side = pair.service.outside, pair.service.in_cluster
        if outside is not None:
            ext = f"external: {outside.what}"
            if pair.dev is None:
                out.append(drift(DIM, name, None, ext, "in the mapping table but not in the compose file"))
            else:
                out.append(drift(DIM, name, dev, ext, "runs in compose but is not in the cluster"))
            continue
        assert prod_side is not None
        prod = f"{pair.workload.kind}/{pair.workload.name}" if pair.workload else None
        if pair.workload and pair.container is None:
            out.append(drift(DIM, name, dev, prod, f"workload has no container {prod_side.container!r}"))
        elif pair.dev is None or pair.workload is None:
            missing = "compose" if pair.dev is None else "k8s"
            out.append(drift(DIM, name, dev, prod, f"missing in {missing}"))
        else:
            services = [s for s in prod_side.services if s not in ctx.k8s.services]
            if services:
                out.append(drift(DIM, name, dev, prod, f"k8s Services {services} do not exist"))
            else:
                out.append(ok(DIM, name, dev, f"{prod} + Service {', '.join(prod_side.services)}"))
    out.extend(_one_shots(ctx))
    known = {s.compose for s in SERVICES} | {o.compose for o in ONE_SHOTS}
    for name in ctx.compose.services:
        if name not in known:
            out.append(drift(DIM, name, f"service {name}", None, "compose service not in the mapping table"))
    workloads = {s.workload for s in SERVICES}
    for name, wl in ctx.k8s.workloads.items():
        if name not in workloads:
            out.append(drift(DIM, f"k8s:{name}", None, f"{wl.kind}/{name}", "workload not in the mapping table"))
    mapped_services = {s for svc in SERVICES for s in svc.k8s_services}
    for name in ctx.k8s.services:
        if name not in mapped_services:
            out.append(drift(DIM, f"k8s:{name}", None, f"Service/{name}", "Service not in the mapping table"))
    for problem in ctx.k8s.problems:
        out.append(drift(DIM, f"k8s:{problem.split(':')[0]}", None, problem, "reference does not resolve"))
    out.extend(_operator_secrets(ctx))
    return out


def _one_shots(ctx: ParityContext) -> list[Finding]:
    """Each one-shot compose service <-> its initContainer in every workload of the services it runs for."""
    out: list[Finding] = []
    for one in ONE_SHOTS:
        dev = f"service {one.compose}" if one.compose in ctx.compose.services else None
        found, missing = [], []
        for key in one.of:
            workload = ctx.k8s.workloads.get(BY_KEY[key].workload or "")
            if workload is not None and any(c.name == one.init_container for c in workload.init_containers):
                found.append(f"{workload.kind}/{workload.name}")
            else:
                missing.append(f"{workload.kind}/{workload.name}" if workload else key)
        prod = f"initContainer {one.init_container} of {', '.join(found)}" if found else None
        if dev is None:
            out.append(drift(DIM, one.compose, None, prod, "missing in compose"))
        elif missing:
            out.append(drift(DIM, one.compose, dev, prod,
                             f"no initContainer {one.init_container!r} in {', '.join(missing)}"))
        else:
            out.append(ok(DIM, one.compose, dev, prod))
    return out


def _operator_secrets(ctx: ParityContext) -> list[Finding]:
    out: list[Finding] = []
    for name in OPERATOR_SECRETS:
        subject = f"k8s:secret/{name}"
        shipped = ctx.k8s.find("Secret", name)
        provided = next((keys for (_, n), keys in ctx.k8s.provided_secrets.items() if n == name), None)
        users = sorted({u for (_, n), names in ctx.k8s.secret_users.items() if n == name for u in names})
        if shipped is not None:
            out.append(
                drift(DIM, subject, None, "Secret in the manifests",
                      f"created by the operator ({OPERATOR_SECRETS_SCRIPT}): shipping it makes every "
                      "`kubectl apply -k` overwrite the real credentials; remove it from the kustomization")
            )
        elif not users:
            out.append(
                drift(DIM, subject, None, "no workload refers to it",
                      f"the operator is asked for it ({OPERATOR_SECRETS_SCRIPT}) but nothing uses it")
            )
        elif provided is not None:
            prod = f"provided by the operator ({OPERATOR_SECRETS_SCRIPT}): {', '.join(provided)}"
            out.append(ok(DIM, subject, None, prod, f"used by {', '.join(users)}"))
    return out
