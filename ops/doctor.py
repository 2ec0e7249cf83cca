"""`somabrain doctor --env dev|prod`: the deployment guide's troubleshooting section, automated.

In order: service DNS from inside the somabrain workload; Service Endpoints (prod) or container state (dev); how
the one-shot db-init ended (its container in dev, its initContainer in each app pod in prod); memory-service
connectivity from the somabrain workload; TLS files and (prod) the somabrain-tls Secret; OPA responsiveness and
fail-closed state; Postgres and Redis connectivity; the predictor is not the stub. Each line
is OK, WARN or FAIL, with the exact next command to run.

Every probe from inside the workload goes out in ONE exec (the conformance target layer runs them concurrently),
so a healthy stack answers in a few seconds.

Exit codes: 0 healthy, 1 degraded (warnings only), 2 broken (any FAIL), 3 unusable arguments or unreachable
environment.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from cryptography import x509

from conformance.expectations import TLS_HOST, TLS_MIN_DAYS_DEFAULT
from conformance.inventory import API, BY_KEY, ONE_SHOTS, SEED
from conformance.inventory import dependencies as service_dependencies
from ops.common import (
    EXIT_BROKEN,
    EXIT_DEGRADED,
    EXIT_OK,
    REPO,
    Line,
    OpsError,
    UsageParser,
    add_target_arguments,
    build_target,
    emit,
    fail,
    reachable,
)
from targets.base import HttpResult, Probe, ProbeError, ProbeResult, ResolveResult, Target, TcpResult
from targets.tls import key_matches_certificate, san_covers

PROG = "somabrain doctor"
LOCAL_HEALTH = f"http://127.0.0.1:{API.port}/health"


def resolve_hint(target: Target, key: str) -> str:
    """Resolve a service's name from inside the API workload, by hand (its image has python3, not nslookup)."""
    host = BY_KEY[key].host(target.env, target.namespace)
    return target.exec_command(API.key, f"python3 -c \"import socket; print(socket.gethostbyname('{host}'))\"")


def http_hint(target: Target, url: str) -> str:
    """GET a URL from inside the API workload, by hand (its image has python3, not curl)."""
    return target.exec_command(
        API.key, f"python3 -c \"import urllib.request; print(urllib.request.urlopen('{url}').read().decode())\"")


@dataclass
class Observations:
    """Everything the checks read, gathered up front (one exec into the API workload)."""

    probes: dict[str, ProbeResult] = field(default_factory=dict)
    probe_error: str = ""
    health: dict[str, Any] | None = None
    health_error: str = ""


def observe(target: Target) -> Observations:
    env, ns = target.env, target.namespace
    deps = service_dependencies(env)
    wanted: dict[str, Probe] = {}
    for svc in deps:
        host = svc.host(env, ns)
        assert host is not None
        wanted[f"resolve:{svc.key}"] = Probe.resolve(host)
        wanted[f"tcp:{svc.key}"] = Probe.tcp(host, svc.port, timeout=1.0, attempts=1)
    memory, opa = BY_KEY["somamemory"], BY_KEY["opa"]
    wanted["http:memory"] = Probe.http(f"http://{memory.host(env, ns)}:{memory.port}/health", timeout=2.0)
    wanted["http:opa"] = Probe.http(f"http://{opa.host(env, ns)}:{opa.port}/health", timeout=2.0)
    wanted["http:health"] = Probe.http(LOCAL_HEALTH, timeout=3.0)
    seen = Observations()
    try:
        results = target.run_probes(API.key, list(wanted.values()))
    except ProbeError as exc:
        seen.probe_error = str(exc)
        seen.health_error = str(exc)
        return seen
    seen.probes = dict(zip(wanted, results, strict=True))
    health = seen.probes["http:health"]
    assert isinstance(health, HttpResult)
    if not health.ok:
        seen.health_error = f"GET /health from inside the API workload failed: {health.error}"
    else:
        try:
            document = health.json()
            seen.health = document if isinstance(document, dict) else None
            if seen.health is None:
                seen.health_error = f"GET /health answered {health.status} with no JSON object"
        except ValueError:
            seen.health_error = f"GET /health answered {health.status}: {health.body[:200]!r}"
    return seen


# --- the checks, in the guide's order ----------------------------------------------------------------------
Check = Callable[[Target, Observations], list[Line]]


def check_dns(target: Target, seen: Observations) -> list[Line]:
    if seen.probe_error:
        return [Line("FAIL", "dns", f"cannot probe from the somabrain workload: {seen.probe_error}",
                     f"{target.status_command()}\n{target.logs_command(API.key)}")]
    lines = []
    names = []
    for svc in service_dependencies(target.env):
        result = seen.probes[f"resolve:{svc.key}"]
        assert isinstance(result, ResolveResult)
        if result.ok:
            names.append(result.name)
        else:
            lines.append(Line("FAIL", "dns", f"{result.name} does not resolve from somabrain ({result.error})",
                              f"{resolve_hint(target, svc.key)}\n{target.status_command(svc.key)}"))
    if not lines:
        lines.append(Line("OK", "dns", f"{', '.join(names)} resolve from the somabrain workload"))
    return lines


def check_endpoints(target: Target, seen: Observations) -> list[Line]:
    serving = target.serving(SEED)
    lines = [Line(state.level, serving.check, state.message, state.next) for state in serving.states
             if state.level != "OK"]
    return lines or [Line("OK", serving.check, serving.summary)]


def check_bootstrap(target: Target, seen: Observations) -> list[Line]:
    """The one-shot steps before the apps (db-init: the Postgres roles and schemas): a failed one is why an app
    never starts, which the endpoints or container lines only show as not serving."""
    states = target.bootstrap(ONE_SHOTS)
    lines = [Line(state.level, "bootstrap", state.message, state.next) for state in states if state.level != "OK"]
    return lines or [Line("OK", "bootstrap", "; ".join(state.message for state in states) or "no bootstrap step")]


def check_memory(target: Target, seen: Observations) -> list[Line]:
    memory = BY_KEY["somamemory"]
    url = f"http://{memory.host(target.env, target.namespace)}:{memory.port}/health"
    if seen.probe_error:
        return [Line("FAIL", "memory", f"cannot probe from the somabrain workload: {seen.probe_error}",
                     target.logs_command(API.key))]
    result = seen.probes["http:memory"]
    assert isinstance(result, HttpResult)
    if result.ok and result.status == 200:
        return [Line("OK", "memory", f"GET {url} from somabrain: 200")]
    seen_as = f"answered {result.status}: {result.body[:120]!r}" if result.ok else result.error
    return [Line("FAIL", "memory", f"GET {url} from somabrain {seen_as}",
                 f"{http_hint(target, url)}\n{target.logs_command('somamemory')}")]


def check_tls(target: Target, seen: Observations, tls_dir: Path = REPO / "infra" / "tls",
              min_days: int = TLS_MIN_DAYS_DEFAULT) -> list[Line]:
    served = target.served_tls()
    if served is not None:  # what the Ingress (Secret somabrain-tls) or the compose front (its mount) serves
        nxt = f"{served.inspect}\nscripts/setup_ingress_tls.sh"
        if served.problem:
            return [Line("FAIL", "tls", served.problem, nxt)]
        if served.cert_pem is None or served.key_pem is None:
            return [Line("FAIL", "tls", f"{served.where}: no {TLS_HOST}.crt or {TLS_HOST}.key", nxt)]
        return [_cert_line("tls", served.where, served.cert_pem, served.key_pem, min_days, nxt)]
    # Nothing serves TLS (dev without its front): the files the front would mount, if any.
    crt, key = tls_dir / f"{TLS_HOST}.crt", tls_dir / f"{TLS_HOST}.key"
    if crt.is_file() and key.is_file():
        return [_cert_line("tls", f"{_rel(crt)}", crt.read_bytes(), key.read_bytes(), min_days,
                           f"openssl x509 -in {_rel(crt)} -text -noout\nscripts/setup_ingress_tls.sh")]
    return [Line("OK", "tls", f"no {_rel(crt)}: dev serves plain HTTP and needs none "
                 "(scripts/setup_ingress_tls.sh makes it for the ingress)")]


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def _cert_line(check: str, what: str, cert_pem: bytes, key_pem: bytes, min_days: int, nxt: str) -> Line:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        return Line("FAIL", check, f"{what}: not a PEM certificate ({exc})", nxt)
    now = datetime.now(UTC)
    days = (cert.not_valid_after_utc - now).total_seconds() / 86400
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    matches, why = key_matches_certificate(cert_pem, key_pem)
    if cert.not_valid_before_utc > now:
        return Line("FAIL", check, f"{what}: not valid before {cert.not_valid_before_utc:%Y-%m-%d}", nxt)
    if days <= 0:
        return Line("FAIL", check, f"{what}: expired on {cert.not_valid_after_utc:%Y-%m-%d}", nxt)
    if not san_covers(names, TLS_HOST):
        return Line("FAIL", check, f"{what}: SAN {list(names)} does not cover {TLS_HOST}", nxt)
    if not matches:
        return Line("FAIL", check, f"{what}: {why}", nxt)
    if days < min_days:
        return Line("WARN", check, f"{what}: expires in {days:.0f} days (under {min_days})", nxt)
    return Line("OK", check, f"{what}: valid for {TLS_HOST}, {days:.0f} days left, key matches")


def check_opa(target: Target, seen: Observations) -> list[Line]:
    opa = BY_KEY["opa"]
    url = f"http://{opa.host(target.env, target.namespace)}:{opa.port}/health"
    direct = seen.probes.get("http:opa")
    direct_ok = isinstance(direct, HttpResult) and direct.ok and direct.status == 200
    component = (seen.health or {}).get("components", {}).get("opa") if seen.health else None
    nxt = f"{http_hint(target, url)}\n{target.logs_command('opa')}"
    if component is None:
        if seen.health is None:
            return [Line("FAIL" if not direct_ok else "WARN", "opa",
                         f"cannot read the API's view ({seen.health_error}); direct GET {url}: "
                         f"{'200' if direct_ok else _describe(direct)}", nxt)]
        return [Line("WARN", "opa", "the API has no OPA configured (no components.opa): nothing enforces policy",
                     "set SOMABRAIN_OPA_URL (compose/docker-compose.yml, ConfigMap somabrain-env)")]
    fail_closed = component.get("fail_closed")
    if component.get("ok") and direct_ok:
        return [Line("OK", "opa", f"responsive (GET {url}: 200), fail_closed={fail_closed}")]
    if component.get("ok"):
        return [Line("WARN", "opa", f"the API sees OPA up but GET {url} from somabrain: {_describe(direct)}", nxt)]
    if fail_closed:
        return [Line("FAIL", "opa", f"OPA does not answer ({component.get('error', _describe(direct))}) and the "
                     "policy is fail-closed: every request is denied", f"{nxt}\n{target.restart_command('opa')}")]
    return [Line("WARN", "opa", "OPA does not answer and the policy is fail-OPEN: requests pass unchecked", nxt)]


def _describe(result: ProbeResult | None) -> str:
    if isinstance(result, HttpResult):
        return f"{result.status}" if result.ok else result.error
    if isinstance(result, TcpResult):
        return f"{result.status} {result.error}".strip()
    return "not probed"


def _backend(key: str, check: str, target: Target, seen: Observations) -> list[Line]:
    svc = BY_KEY[key]
    host = svc.host(target.env, target.namespace)
    tcp = seen.probes.get(f"tcp:{key}")
    tcp_ok = isinstance(tcp, TcpResult) and tcp.ok
    component = ((seen.health or {}).get("components") or {}).get(key)
    nxt = f"{target.logs_command(key)}\n{target.status_command(key)}"
    if seen.probe_error:
        return [Line("FAIL", check, f"cannot probe from the somabrain workload: {seen.probe_error}", nxt)]
    if not tcp_ok:
        return [Line("FAIL", check, f"{host}:{svc.port} from somabrain: {_describe(tcp)}", nxt)]
    if component is None:
        return [Line("WARN", check, f"{host}:{svc.port} accepts TCP, but the API's /health has no "
                     f"components.{key} ({seen.health_error or 'not reported'})", target.logs_command(API.key))]
    if component.get("ok"):
        latency = component.get("latency_ms")
        return [Line("OK", check, f"{host}:{svc.port} accepts TCP and the API's check passes"
                     + (f" ({latency} ms)" if latency is not None else ""))]
    return [Line("FAIL", check, f"{host}:{svc.port} accepts TCP but the API's check fails: "
                 f"{component.get('error', component)}", f"{target.logs_command(API.key)}\n{target.logs_command(key)}")]


def check_postgres(target: Target, seen: Observations) -> list[Line]:
    return _backend("postgres", "postgres", target, seen)


def check_redis(target: Target, seen: Observations) -> list[Line]:
    return _backend("redis", "redis", target, seen)


def check_predictor(target: Target, seen: Observations) -> list[Line]:
    if seen.health is None:
        return [Line("FAIL", "predictor", f"cannot read /health: {seen.health_error}",
                     f"{http_hint(target, LOCAL_HEALTH)}\n{target.logs_command(API.key)}")]
    provider = seen.health.get("predictor_provider")
    component = (seen.health.get("components") or {}).get("predictor") or {}
    nxt = ("set SOMABRAIN_PREDICTOR_PROVIDER=mahal and SOMABRAIN_STRICT_REAL=1, then "
           + target.restart_command(API.key))
    if provider != "mahal" or component.get("real") is False:
        return [Line("FAIL", "predictor", f"the predictor is {provider!r} (real={component.get('real')}): "
                     "a stub serves", nxt)]
    if component.get("warmed") is False:
        return [Line("WARN", "predictor", "mahal, but not warmed yet (readiness waits for it)",
                     target.logs_command(API.key))]
    return [Line("OK", "predictor", f"mahal, real, warmed; ready={seen.health.get('ready')}")]


CHECKS: tuple[Check, ...] = (check_dns, check_endpoints, check_bootstrap, check_memory, check_tls, check_opa,
                             check_postgres, check_redis, check_predictor)


def diagnose(target: Target, out: TextIO, tls_dir: Path = REPO / "infra" / "tls") -> list[Line]:
    """Run every check in order, printing each line as soon as it is decided; returns the lines."""
    seen = observe(target)
    lines: list[Line] = []
    for check in CHECKS:
        found = check_tls(target, seen, tls_dir=tls_dir) if check is check_tls else check(target, seen)
        lines.extend(emit(line, out) for line in found)
    return lines


def verdict(lines: Sequence[Line]) -> int:
    if any(line.status == "FAIL" for line in lines):
        return EXIT_BROKEN
    if any(line.status == "WARN" for line in lines):
        return EXIT_DEGRADED
    return EXIT_OK


def parser() -> UsageParser:
    p = UsageParser(
        prog=PROG,
        description="Diagnose a SomaBrain environment in the order of the deployment guide's troubleshooting "
                    "section. Each line is OK, WARN or FAIL with the next command to run.",
        epilog="exit codes: 0 healthy, 1 degraded (warnings only), 2 broken (a FAIL), 3 bad arguments or the "
               "environment is unreachable (no Docker/project, no cluster/namespace)",
    )
    p.add_argument("--env", choices=("dev", "prod"), required=True,
                   help="dev = the compose stack, prod = the Kubernetes cluster of the kubeconfig")
    add_target_arguments(p)
    p.add_argument("--tls-dir", type=Path, default=REPO / "infra" / "tls",
                   help="where scripts/setup_ingress_tls.sh wrote the certificate (default infra/tls)")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="json: one document with every line, for scripts")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    started = time.monotonic()
    target = build_target(args.env, args)
    try:
        reachable(target)
    except OpsError as exc:
        return fail(PROG, exc)
    text = args.format == "text"
    if text:
        print(f"{PROG} --env {args.env}: {target.describe()}")
    lines = diagnose(target, sys.stdout if text else io.StringIO(), args.tls_dir)
    code = verdict(lines)
    elapsed = time.monotonic() - started
    counts = {s: sum(1 for line in lines if line.status == s) for s in ("OK", "WARN", "FAIL")}
    state = {EXIT_OK: "healthy", EXIT_DEGRADED: "degraded", EXIT_BROKEN: "broken"}[code]
    if text:
        print(f"{state}: {counts['OK']} OK, {counts['WARN']} WARN, {counts['FAIL']} FAIL in {elapsed:.1f} s "
              f"(exit {code})")
    else:
        print(json.dumps({"env": args.env, "target": target.describe(), "state": state, "exit": code,
                          "seconds": round(elapsed, 2),
                          "lines": [line.__dict__ for line in lines]}, indent=2))
    return code
