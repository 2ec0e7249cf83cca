"""`somabrain doctor --env dev|prod`: the deployment guide's troubleshooting section, automated.

In order: service DNS from inside the somabrain workload; Service Endpoints (prod) or container state (dev);
memory-service connectivity from the somabrain workload; TLS files and (prod) the somabrain-tls Secret; OPA
responsiveness and fail-closed state; Postgres and Redis connectivity; the predictor is not the stub. Each line
is OK, WARN or FAIL, with the exact next command to run.

Every probe from inside the workload goes out in ONE exec (the conformance target layer runs them concurrently),
so a healthy stack answers in a few seconds.

Exit codes: 0 healthy, 1 degraded (warnings only), 2 broken (any FAIL), 3 unusable arguments or unreachable
environment.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from cryptography import x509

from conformance.expectations import TLS_HOST, TLS_MIN_DAYS_DEFAULT, TLS_SECRET, TLS_SECRET_TYPE
from conformance.inventory import API, BY_KEY, SEED
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
from targets.compose import PROJECT_LABEL, SERVICE_LABEL, ComposeTarget
from targets.kube import KubeTarget
from targets.tls import key_matches_certificate, san_covers

PROG = "somabrain doctor"
LOCAL_HEALTH = f"http://127.0.0.1:{API.port}/health"


class Commands:
    """The next commands a human would run, in the environment's own tool (the guide's kubectl lines)."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def _compose(self) -> str:
        assert isinstance(self.target, ComposeTarget)
        return f"docker compose -p {self.target.project}"

    def _ns(self) -> str:
        assert isinstance(self.target, KubeTarget)
        return f"-n {self.target.namespace}"

    def _workload(self, key: str) -> str:
        """`deployment/sb-redis`, `statefulset/postgres`: the workload of a service prod runs in the cluster."""
        prod = BY_KEY[key].in_cluster
        return prod.ref if prod else f"deployment/{key}"

    def logs(self, key: str) -> str:
        if isinstance(self.target, ComposeTarget):
            return f"{self._compose()} logs --tail 50 {BY_KEY[key].compose}"
        return f"kubectl logs {self._workload(key)} {self._ns()} --tail 50"

    def restart(self, key: str) -> str:
        if isinstance(self.target, ComposeTarget):
            return f"{self._compose()} restart {BY_KEY[key].compose}"
        return f"kubectl rollout restart {self._workload(key)} {self._ns()}"

    def status(self, key: str | None = None) -> str:
        if isinstance(self.target, ComposeTarget):
            return f"{self._compose()} ps -a" + (f" {BY_KEY[key].compose}" if key else "")
        if key:
            return f"kubectl get endpoints {BY_KEY[key].k8s_service} {self._ns()}"
        return f"kubectl get endpoints {self._ns()}"

    def resolve(self, key: str) -> str:
        host = BY_KEY[key].host(self.target.env, getattr(self.target, "namespace", ""))
        if isinstance(self.target, ComposeTarget):
            return (f"docker exec -it {self.container_name()} python3 -c "
                    f"\"import socket; print(socket.gethostbyname('{host}'))\"")
        return f"kubectl exec -it {self._workload(API.key)} {self._ns()} -- nslookup {host}"

    def http_from_api(self, url: str) -> str:
        if isinstance(self.target, ComposeTarget):
            return (f"docker exec -it {self.container_name()} python3 -c "
                    f"\"import urllib.request; print(urllib.request.urlopen('{url}').read().decode())\"")
        return f"kubectl exec -it {self._workload(API.key)} {self._ns()} -- curl {url}"

    def container_name(self) -> str:
        try:
            return str(self.target.container(API.key)["Name"]).lstrip("/")  # type: ignore[attr-defined]
        except ProbeError:
            return f"{getattr(self.target, 'project', 'somabrain')}-somabrain-1"


@dataclass
class Observations:
    """Everything the checks read, gathered up front (one exec into the API workload)."""

    probes: dict[str, ProbeResult] = field(default_factory=dict)
    probe_error: str = ""
    health: dict[str, Any] | None = None
    health_error: str = ""


def _namespace(target: Target) -> str:
    return target.namespace if isinstance(target, KubeTarget) else ""


def observe(target: Target) -> Observations:
    env, ns = target.env, _namespace(target)
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
Check = Callable[[Target, Observations, Commands], list[Line]]


def check_dns(target: Target, seen: Observations, cmd: Commands) -> list[Line]:
    if seen.probe_error:
        return [Line("FAIL", "dns", f"cannot probe from the somabrain workload: {seen.probe_error}",
                     f"{cmd.status()}\n{cmd.logs(API.key)}")]
    lines = []
    names = []
    for svc in service_dependencies(target.env):
        result = seen.probes[f"resolve:{svc.key}"]
        assert isinstance(result, ResolveResult)
        if result.ok:
            names.append(result.name)
        else:
            lines.append(Line("FAIL", "dns", f"{result.name} does not resolve from somabrain ({result.error})",
                              f"{cmd.resolve(svc.key)}\n{cmd.status(svc.key)}"))
    if not lines:
        lines.append(Line("OK", "dns", f"{', '.join(names)} resolve from the somabrain workload"))
    return lines


def check_endpoints(target: Target, seen: Observations, cmd: Commands) -> list[Line]:
    if isinstance(target, KubeTarget):
        return _kube_endpoints(target, cmd)
    if isinstance(target, ComposeTarget):
        return _compose_containers(target, cmd)
    return []


def _kube_endpoints(target: KubeTarget, cmd: Commands) -> list[Line]:
    from kubernetes.client.exceptions import ApiException

    lines, good = [], []
    for svc in SEED:
        name = svc.k8s_service
        if name is None:
            continue
        try:
            doc = target.endpoints(name)
        except ApiException as exc:
            lines.append(Line("FAIL", "endpoints", f"Service {name}: no Endpoints object ({exc.reason})",
                              f"kubectl get svc,endpoints {name} -n {target.namespace}"))
            continue
        ready = sum(len(s.get("addresses") or []) for s in doc.get("subsets") or [])
        unready = sum(len(s.get("notReadyAddresses") or []) for s in doc.get("subsets") or [])
        if ready:
            good.append(f"{name}({ready})")
        else:
            why = f"{unready} not-ready pod(s)" if unready else "no pod matches its selector"
            lines.append(Line("FAIL", "endpoints", f"Service {name} has no ready endpoints: {why}",
                              f"{cmd.status(svc.key)}\n"
                              f"kubectl describe pods -n {target.namespace} -l app={svc.workload}"))
    if not lines:
        lines.append(Line("OK", "endpoints", f"every Service has ready endpoints: {', '.join(good)}"))
    return lines


def compose_states(target: ComposeTarget) -> dict[str, tuple[str, str, str]]:
    """compose service -> (container name, state, health) for every container of the project, stopped ones too."""
    fmt = "{{.Label \"" + SERVICE_LABEL + "\"}}\t{{.Names}}\t{{.State}}\t{{.Status}}"
    proc = subprocess.run([target.docker, "ps", "-a", "--filter", f"label={PROJECT_LABEL}={target.project}",
                           "--format", fmt], capture_output=True, text=True, timeout=20, check=False)
    states: dict[str, tuple[str, str, str]] = {}
    for row in proc.stdout.splitlines():
        parts = row.split("\t")
        if len(parts) == 4 and parts[0]:
            health = "healthy" if "(healthy)" in parts[3] else "unhealthy" if "unhealthy" in parts[3] else (
                "starting" if "health: starting" in parts[3] else "none")
            if parts[0] not in states or parts[2] == "running":
                states[parts[0]] = (parts[1], parts[2], health)
    return states


def _compose_containers(target: ComposeTarget, cmd: Commands) -> list[Line]:
    states = compose_states(target)
    lines, good = [], []
    for svc in SEED:
        state = states.get(svc.compose)
        if state is None:
            lines.append(Line("FAIL", "services", f"compose service {svc.compose} has no container",
                              f"docker compose -p {target.project} --env-file .env.local -f compose/docker-compose.yml"
                              f" up -d {svc.compose}"))
        elif state[1] != "running":
            lines.append(Line("FAIL", "services", f"{state[0]} is {state[1]}",
                              f"docker start {state[0]}\n{cmd.logs(svc.key)}"))
        elif state[2] in ("unhealthy", "starting"):
            lines.append(Line("WARN", "services", f"{state[0]} is running but {state[2]}",
                              f"docker inspect --format '{{{{json .State.Health}}}}' {state[0]}\n{cmd.logs(svc.key)}"))
        else:
            good.append(svc.compose)
    if not lines:
        lines.append(Line("OK", "services", f"{len(good)} containers running and healthy ({', '.join(good)})"))
    return lines


def check_memory(target: Target, seen: Observations, cmd: Commands) -> list[Line]:
    memory = BY_KEY["somamemory"]
    url = f"http://{memory.host(target.env, _namespace(target))}:{memory.port}/health"
    if seen.probe_error:
        return [Line("FAIL", "memory", f"cannot probe from the somabrain workload: {seen.probe_error}",
                     cmd.logs(API.key))]
    result = seen.probes["http:memory"]
    assert isinstance(result, HttpResult)
    if result.ok and result.status == 200:
        return [Line("OK", "memory", f"GET {url} from somabrain: 200")]
    seen_as = f"answered {result.status}: {result.body[:120]!r}" if result.ok else result.error
    return [Line("FAIL", "memory", f"GET {url} from somabrain {seen_as}",
                 f"{cmd.http_from_api(url)}\n{cmd.logs('somamemory')}")]


def check_tls(target: Target, seen: Observations, cmd: Commands, tls_dir: Path = REPO / "infra" / "tls",
              min_days: int = TLS_MIN_DAYS_DEFAULT) -> list[Line]:
    crt, key = tls_dir / f"{TLS_HOST}.crt", tls_dir / f"{TLS_HOST}.key"
    lines: list[Line] = []
    inspect = f"openssl x509 -in {_rel(crt)} -text -noout"
    if crt.is_file() and key.is_file():
        lines.append(_cert_line("tls", f"{_rel(crt)}", crt.read_bytes(), key.read_bytes(), min_days,
                                f"{inspect}\nscripts/setup_ingress_tls.sh"))
    elif target.env == "dev":
        lines.append(Line("OK", "tls", f"no {_rel(crt)}: dev serves plain HTTP and needs none "
                          "(scripts/setup_ingress_tls.sh makes it for the ingress)"))
    if isinstance(target, KubeTarget):
        show = f"kubectl get secret {TLS_SECRET} -n {target.namespace} -o yaml"
        secret = target.secret(TLS_SECRET)
        if secret is None:
            lines.append(Line("FAIL", "tls", f"Secret {TLS_SECRET} does not exist in {target.namespace}",
                              f"{show}\nscripts/setup_ingress_tls.sh"))
        elif secret.get("type") != TLS_SECRET_TYPE:
            lines.append(Line("FAIL", "tls", f"Secret {TLS_SECRET} has type {secret.get('type')!r}, "
                              f"not {TLS_SECRET_TYPE}", show))
        else:
            data = secret.get("data") or {}
            try:
                cert_pem = base64.b64decode(data.get("tls.crt", ""))
                key_pem = base64.b64decode(data.get("tls.key", ""))
            except ValueError:
                cert_pem = key_pem = b""
            lines.append(_cert_line("tls", f"Secret {TLS_SECRET}", cert_pem, key_pem, min_days, show))
    return lines


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


def check_opa(target: Target, seen: Observations, cmd: Commands) -> list[Line]:
    opa = BY_KEY["opa"]
    url = f"http://{opa.host(target.env, _namespace(target))}:{opa.port}/health"
    direct = seen.probes.get("http:opa")
    direct_ok = isinstance(direct, HttpResult) and direct.ok and direct.status == 200
    component = (seen.health or {}).get("components", {}).get("opa") if seen.health else None
    nxt = f"{cmd.http_from_api(url)}\n{cmd.logs('opa')}"
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
                     "policy is fail-closed: every request is denied", f"{nxt}\n{cmd.restart('opa')}")]
    return [Line("WARN", "opa", "OPA does not answer and the policy is fail-OPEN: requests pass unchecked", nxt)]


def _describe(result: ProbeResult | None) -> str:
    if isinstance(result, HttpResult):
        return f"{result.status}" if result.ok else result.error
    if isinstance(result, TcpResult):
        return f"{result.status} {result.error}".strip()
    return "not probed"


def _backend(key: str, check: str, target: Target, seen: Observations, cmd: Commands) -> list[Line]:
    svc = BY_KEY[key]
    host = svc.host(target.env, _namespace(target))
    tcp = seen.probes.get(f"tcp:{key}")
    tcp_ok = isinstance(tcp, TcpResult) and tcp.ok
    component = ((seen.health or {}).get("components") or {}).get(key)
    nxt = f"{cmd.logs(key)}\n{cmd.status(key)}"
    if seen.probe_error:
        return [Line("FAIL", check, f"cannot probe from the somabrain workload: {seen.probe_error}", nxt)]
    if not tcp_ok:
        return [Line("FAIL", check, f"{host}:{svc.port} from somabrain: {_describe(tcp)}", nxt)]
    if component is None:
        return [Line("WARN", check, f"{host}:{svc.port} accepts TCP, but the API's /health has no "
                     f"components.{key} ({seen.health_error or 'not reported'})", cmd.logs(API.key))]
    if component.get("ok"):
        latency = component.get("latency_ms")
        return [Line("OK", check, f"{host}:{svc.port} accepts TCP and the API's check passes"
                     + (f" ({latency} ms)" if latency is not None else ""))]
    return [Line("FAIL", check, f"{host}:{svc.port} accepts TCP but the API's check fails: "
                 f"{component.get('error', component)}", f"{cmd.logs(API.key)}\n{cmd.logs(key)}")]


def check_postgres(target: Target, seen: Observations, cmd: Commands) -> list[Line]:
    return _backend("postgres", "postgres", target, seen, cmd)


def check_redis(target: Target, seen: Observations, cmd: Commands) -> list[Line]:
    return _backend("redis", "redis", target, seen, cmd)


def check_predictor(target: Target, seen: Observations, cmd: Commands) -> list[Line]:
    if seen.health is None:
        return [Line("FAIL", "predictor", f"cannot read /health: {seen.health_error}",
                     f"{cmd.http_from_api(LOCAL_HEALTH)}\n{cmd.logs(API.key)}")]
    provider = seen.health.get("predictor_provider")
    component = (seen.health.get("components") or {}).get("predictor") or {}
    nxt = ("set SOMABRAIN_PREDICTOR_PROVIDER=mahal and SOMABRAIN_STRICT_REAL=1, then "
           + cmd.restart(API.key))
    if provider != "mahal" or component.get("real") is False:
        return [Line("FAIL", "predictor", f"the predictor is {provider!r} (real={component.get('real')}): "
                     "a stub serves", nxt)]
    if component.get("warmed") is False:
        return [Line("WARN", "predictor", "mahal, but not warmed yet (readiness waits for it)", cmd.logs(API.key))]
    return [Line("OK", "predictor", f"mahal, real, warmed; ready={seen.health.get('ready')}")]


CHECKS: tuple[Check, ...] = (check_dns, check_endpoints, check_memory, check_tls, check_opa, check_postgres,
                             check_redis, check_predictor)


def diagnose(target: Target, out: TextIO, tls_dir: Path = REPO / "infra" / "tls") -> list[Line]:
    """Run every check in order, printing each line as soon as it is decided; returns the lines."""
    seen = observe(target)
    cmd = Commands(target)
    lines: list[Line] = []
    for check in CHECKS:
        found = check_tls(target, seen, cmd, tls_dir=tls_dir) if check is check_tls else check(target, seen, cmd)
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
