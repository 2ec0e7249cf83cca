"""Dimension `env`: the SOMABRAIN_* matrix (and PROMETHEUS_MULTIPROC_DIR).

- SOMABRAIN_ENV must name each environment (`dev` in compose, `prod` in k8s);
- the strict-real settings must be identical (a hard finding: no exception can accept a difference);
- URLs must reach the same service and port through each environment's naming (credentials are the
  security dimension's business and are not compared here);
- a secret (dev: nothing but a variable of the env file; prod: a Secret key) is never compared by value;
- anything else must be equal, and present on both sides."""

from __future__ import annotations

from conformance.loaders.compose import EnvVar
from conformance.loaders.k8s import EnvValue
from conformance.parity.context import Endpoint, Pair, ParityContext, display_raw
from conformance.parity.findings import Finding, drift, ok

DIM = "env"
STRICT_REAL = (
    "SOMABRAIN_STRICT_REAL",
    "SOMABRAIN_FORCE_FULL_STACK",
    "SOMABRAIN_REQUIRE_MEMORY",
    "SOMABRAIN_PREDICTOR_PROVIDER",
)
EXTRA = ("PROMETHEUS_MULTIPROC_DIR",)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def in_scope(name: str) -> bool:
    return name.startswith("SOMABRAIN_") or name in EXTRA


def _norm(value: str) -> str:
    low = value.strip().lower()
    if low in _TRUE:
        return "true"
    if low in _FALSE:
        return "false"
    return value.strip()


def compare(ctx: ParityContext) -> list[Finding]:
    out: list[Finding] = []
    for pair in ctx.in_both:
        assert pair.dev is not None and pair.container is not None
        dev_env = {k: v for k, v in pair.dev.environment.items() if in_scope(k)}
        prod_env = {k: v for k, v in pair.container.env.items() if in_scope(k)}
        for name in sorted(set(dev_env) | set(prod_env)):
            out.append(_one(ctx, pair, name, dev_env.get(name), prod_env.get(name)))
    return out


def _one(ctx: ParityContext, pair: Pair, name: str, dev: EnvVar | None, prod: EnvValue | None) -> Finding:
    subject = f"{pair.name}/{name}"
    dev_text = display_raw(dev.value.raw) if dev and dev.value.variables else (dev.value.value if dev else None)
    prod_text = prod.template if prod else None
    if dev is None or prod is None:
        side = "dev" if dev is None else "prod"
        return drift(DIM, subject, dev_text, prod_text, f"not set in {side}", hard=name in STRICT_REAL)
    if name == "SOMABRAIN_ENV":
        if dev.value.value == "dev" and prod.value == "prod":
            return ok(DIM, subject, dev_text, prod_text, "names each environment")
        return drift(DIM, subject, dev_text, prod_text, "must be `dev` in compose and `prod` in k8s")
    if name in STRICT_REAL:
        if _norm(dev.value.value) == _norm(prod.value):
            return ok(DIM, subject, dev_text, prod_text)
        return drift(DIM, subject, dev_text, prod_text, "strict-real settings must be identical", hard=True)
    if prod.from_secret and len(dev.value.variables) == 1 and dev.value.raw.startswith("${") \
            and dev.value.raw.endswith("}") and dev.value.raw.count("${") == 1:
        return ok(DIM, subject, dev_text, f"{prod_text} ({prod.source})",
                  "a secret on both sides (dev: the env file, prod: the Secret): compared by source, not value")
    dev_ep = ctx.dev_endpoint(dev.value.raw, dev.value.value)
    prod_ep = ctx.prod_endpoint(prod.template, pair.workload.namespace if pair.workload else "")
    if dev_ep is not None or prod_ep is not None:
        return _url(ctx, subject, dev_text, prod_text, dev_ep, prod_ep)
    if _norm(dev.value.value) == _norm(prod.value):
        return ok(DIM, subject, dev_text, prod_text)
    return drift(DIM, subject, dev_text, prod_text, "values differ")


def _url(
    ctx: ParityContext,
    subject: str,
    dev_text: str | None,
    prod_text: str | None,
    dev: Endpoint | None,
    prod: Endpoint | None,
) -> Finding:
    if dev is None or prod is None:
        return drift(DIM, subject, dev_text, prod_text, "a URL on one side only")
    problems: list[str] = []
    if dev.scheme != prod.scheme:
        problems.append(f"scheme {dev.scheme} vs {prod.scheme}")
    if dev.service is None:
        problems.append(f"dev host {dev.host} is no compose service")
    if prod.external:
        pair = ctx.pair(dev.service or "")
        if pair is None or pair.service.outside is None:
            problems.append(f"prod host {prod.host} is not the cluster Service of {dev.service}")
    elif dev.service != prod.service:
        problems.append(f"dev reaches {dev.service}, prod reaches {prod.service}")
    if dev.port != prod.port:
        problems.append(f"port {dev.port} vs {prod.port}")
    if dev.path.rstrip("/") != prod.path.rstrip("/"):
        problems.append(f"path {dev.path or '/'} vs {prod.path or '/'}")
    if problems:
        return drift(DIM, subject, dev_text, prod_text, "; ".join(problems))
    return ok(DIM, subject, dev_text, prod_text, f"both reach {dev.service}:{dev.port}")
