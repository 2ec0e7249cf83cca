"""The environment target: run a probe from inside a workload and read what the workload declares.

One implementation per environment (`ComposeTarget`, `KubeTarget`). Workloads are named by their logical
name from the service inventory (`somabrain`, `redis`, ...); each target maps them to a container or pod.
Every probe returns a structured result; nothing raises for an unreachable peer. `TargetUnreachable` is
raised only when the environment itself cannot be used (no Docker, no cluster): the plugin turns it into
a usage error.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

PROBE_SCRIPT = (Path(__file__).parent / "probe_script.py").read_text(encoding="utf-8")


class TargetUnreachable(Exception):
    """The chosen environment cannot be reached; the message says what was tried and what to do."""


class ProbeError(Exception):
    """A probe could not run inside a workload (no such container, no python3, exec failed)."""


@dataclass(frozen=True)
class ExecResult:
    """What a command run inside a workload (`Target.exec`) ended with."""

    code: int
    stdout: bytes  # empty when streamed to a sink
    stderr: str
    where: str  # "container sb-postgres-1", "pod postgres-0": for messages

    def check(self, what: str) -> ExecResult:
        """Self when the command exited 0; else a ProbeError naming `what`, where, and the end of its stderr."""
        if self.code != 0:
            raise ProbeError(f"{what} in {self.where} exited {self.code}: {self.stderr.strip()[-600:]}")
        return self


@dataclass(frozen=True)
class ResolveResult:
    name: str
    ok: bool
    addresses: tuple[str, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class TcpResult:
    host: str
    port: int
    status: str  # connected | refused | timeout | unresolved | error
    address: str = ""
    error: str = ""
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.status == "connected"


@dataclass(frozen=True)
class HttpResult:
    url: str
    ok: bool
    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = ""
    error: str = ""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Probe:
    """One probe request, as the in-container script takes it."""

    op: str  # resolve | tcp | http
    args: Mapping[str, Any]

    @classmethod
    def resolve(cls, name: str) -> Probe:
        return cls("resolve", {"name": name})

    @classmethod
    def tcp(cls, host: str, port: int, timeout: float = 1.0, attempts: int = 2) -> Probe:
        return cls("tcp", {"host": host, "port": port, "timeout": timeout, "attempts": attempts})

    @classmethod
    def http(cls, url: str, method: str = "GET", headers: Mapping[str, str] | None = None,
             timeout: float = 3.0, body: str | None = None) -> Probe:
        return cls("http", {"url": url, "method": method, "headers": dict(headers or {}),
                            "timeout": timeout, "body": body})

    def payload(self) -> dict[str, Any]:
        return {"op": self.op, **self.args}


ProbeResult = ResolveResult | TcpResult | HttpResult


def parse_result(probe: Probe, raw: Mapping[str, Any]) -> ProbeResult:
    """Turn the script's JSON answer for `probe` into a typed result."""
    if probe.op == "resolve":
        return ResolveResult(probe.args["name"], bool(raw.get("ok")), tuple(raw.get("addresses") or ()),
                             str(raw.get("error", "")))
    if probe.op == "tcp":
        return TcpResult(probe.args["host"], int(probe.args["port"]), str(raw.get("status", "error")),
                         str(raw.get("address", "")), str(raw.get("error", "")), int(raw.get("attempts", 1)))
    return HttpResult(probe.args["url"], bool(raw.get("ok")), raw.get("status"), dict(raw.get("headers") or {}),
                      str(raw.get("body", "")), str(raw.get("error", "")))


def decode_batch(probes: Sequence[Probe], stdout: str, where: str) -> list[ProbeResult]:
    try:
        raw = json.loads(stdout)
    except ValueError as exc:
        raise ProbeError(f"{where}: the probe printed no JSON ({exc}); output: {stdout[:300]!r}") from exc
    if not isinstance(raw, list) or len(raw) != len(probes):
        raise ProbeError(f"{where}: the probe answered {len(raw) if isinstance(raw, list) else raw!r} results "
                         f"for {len(probes)} probes")
    return [parse_result(p, r) for p, r in zip(probes, raw, strict=True)]


@dataclass(frozen=True)
class WorkloadSpec:
    """What a workload declares: resources, probes/healthchecks and environment."""

    name: str
    env: Mapping[str, str]
    memory_limit_bytes: int | None = None
    cpu_limit: float | None = None  # cores
    probes: Mapping[str, Any] = field(default_factory=dict)  # readiness/liveness/startup (k8s), healthcheck (compose)
    ready: bool = False  # every replica Ready (k8s) / healthy (compose)
    replicas: Mapping[str, bool] = field(default_factory=dict)  # pod or container name -> ready
    detail: str = ""


@dataclass(frozen=True)
class ServiceState:
    """How one service of the inventory is being served, in the environment's own words (an Endpoints object's
    ready addresses; a container's state and health)."""

    key: str
    level: str  # OK | WARN | FAIL
    message: str  # what was seen, e.g. "Service sb-opa has no ready endpoints: no pod matches its selector"
    next: str = ""  # the command(s) a human would run next, one per line
    label: str = ""  # how an OK state is named in the summary: "sb-opa(1)", "sb_redis"
    addresses: tuple[str, ...] = ()  # the ready addresses, where the environment lists them (Endpoints)


@dataclass(frozen=True)
class Serving:
    """Every seed service's state: what the environment calls this check ("endpoints" in Kubernetes, "services"
    in compose), one state per service, and the line that sums them up when all serve."""

    check: str
    states: tuple[ServiceState, ...]
    summary: str


@dataclass(frozen=True)
class ServedTls:
    """Where the environment serves TLS from (Secret somabrain-tls; the compose front's mounted files), what is
    there, and what is wrong with it before any certificate is read (`problem`: no such Secret, the wrong type,
    nothing mounted). `document` is the Secret itself, where there is one."""

    where: str
    cert_pem: bytes | None
    key_pem: bytes | None
    inspect: str  # the command that shows it
    problem: str = ""
    document: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class LocalEndpoint:
    """Where a client on this host reaches a workload's port: `address` ("127.0.0.1:PORT") or None, and a note
    saying why there is none when that is worth telling (it runs, but nothing publishes it)."""

    address: str | None
    note: str = ""


class SecretStore(ABC):
    """One operator Secret's keys where the environment keeps them (the Secret itself; the env file), read and
    written under the Secret's key names."""

    where: str  # as messages name it: "Secret somabrain-postgres-app", "/path/.env.local"

    @abstractmethod
    def key_name(self, key: str) -> str:
        """How the store spells the Secret's `key` (POSTGRES_PASSWORD; POSTGRES_APP_PASSWORD in the env file)."""

    @abstractmethod
    def read(self) -> dict[str, str]:
        """Every key there is, decoded, under the Secret's names."""

    @abstractmethod
    def write(self, changes: Mapping[str, str | None]) -> None:
        """Set (str) or remove (None) keys, named as `read` names them, in one atomic write."""


class Target(ABC):
    """An environment in which the suite runs probes."""

    env: str
    namespace: str = ""  # the Kubernetes namespace; "" where names are not namespaced (compose)

    def describe(self) -> str:
        """Which environment this is, for reports and tool output."""
        return type(self).__name__

    @abstractmethod
    def check_reachable(self) -> None:
        """Raise TargetUnreachable with a one-paragraph message when the environment cannot be used."""

    @abstractmethod
    def workload_names(self) -> list[str]:
        """The logical workloads that exist (running) in this environment."""

    @abstractmethod
    def run_probes(self, workload: str, probes: Sequence[Probe]) -> list[ProbeResult]:
        """Run every probe from inside `workload` (one exec, concurrently). Raises ProbeError."""

    @abstractmethod
    def exec(self, workload: str, argv: Sequence[str], stdin: bytes | None = None, sink: IO[bytes] | None = None,
             timeout: float = 600.0) -> ExecResult:
        """Run `argv` in `workload` (not only a probe: psql COPY, the journal's export and import), with `stdin`
        when given; stdout goes to `sink` when given (streamed), else into the result. Commands that read stdin
        must know where their input ends by themselves (psql stops at `\\q`; the journal writer reads a
        length-prefixed payload): the v4 Kubernetes exec protocol cannot close stdin. Raises ProbeError when the
        command cannot start or does not finish within `timeout`; its own exit code is in the result."""

    @abstractmethod
    def declared(self, workload: str) -> WorkloadSpec:
        """The workload's declared resources, probes and environment, with its replicas' readiness."""

    @abstractmethod
    def local_endpoint(self, workload: str, port: int) -> LocalEndpoint:
        """Where a client on this host reaches `port` of `workload` (the API, the TLS front)."""

    @abstractmethod
    def serving(self, services: Sequence[Any]) -> Serving:
        """The state of each of `services` (conformance.inventory records) as the environment serves it."""

    @abstractmethod
    def bootstrap(self, steps: Sequence[Any]) -> list[ServiceState]:
        """How each of `steps` (conformance.inventory.ONE_SHOTS: run once, before the apps start) ended: one state
        per step when it finished, or one per pod or container where it did not."""

    @abstractmethod
    def served_tls(self) -> ServedTls | None:
        """Where TLS for the public host is served from; None when nothing in this environment serves it (the
        compose front is not running)."""

    @abstractmethod
    def secret_store(self, name: str) -> SecretStore:
        """Where this environment keeps operator Secret `name` (conformance.expectations.OPERATOR_SECRETS)."""

    @abstractmethod
    def roll(self, workloads: Sequence[str], timeout: float) -> list[str]:
        """Restart `workloads` so that they read their configuration and Secrets again, and wait until they serve:
        the problems found (empty when every one serves again)."""

    # -- the next commands a human would run, in the environment's own tool -------------------------
    @abstractmethod
    def roll_command(self, workloads: Sequence[str]) -> str:
        """What `roll` does, by hand."""

    @abstractmethod
    def logs_command(self, key: str) -> str:
        """Show the last lines of a service's log."""

    @abstractmethod
    def restart_command(self, key: str) -> str:
        """Restart a service."""

    @abstractmethod
    def status_command(self, key: str | None = None) -> str:
        """Show a service's (or every service's) serving state."""

    @abstractmethod
    def exec_command(self, workload: str, argv: str) -> str:
        """Run a shell-quoted command line interactively in a workload."""

    # -- conveniences over run_probes ----------------------------------------------------------------
    def resolve(self, workload: str, name: str) -> ResolveResult:
        result = self.run_probes(workload, [Probe.resolve(name)])[0]
        assert isinstance(result, ResolveResult)
        return result

    def tcp_connect(self, workload: str, host: str, port: int, timeout: float = 1.0, attempts: int = 2) -> TcpResult:
        result = self.run_probes(workload, [Probe.tcp(host, port, timeout, attempts)])[0]
        assert isinstance(result, TcpResult)
        return result

    def http_request(self, workload: str, url: str, method: str = "GET",
                     headers: Mapping[str, str] | None = None, timeout: float = 3.0) -> HttpResult:
        result = self.run_probes(workload, [Probe.http(url, method, headers, timeout)])[0]
        assert isinstance(result, HttpResult)
        return result
