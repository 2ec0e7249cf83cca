"""The dev environment: a running Docker Compose project, driven through the docker CLI.

Workload `redis` is the running container of compose service `sb_redis` (label com.docker.compose.service)
in project P (label com.docker.compose.project). Probes run as `docker exec -i CONTAINER python3 -c
<probe_script> <json>`. When an image has no python3 (the public redis/postgres alpine images), the
same probe runs in a throw-away container that joins the workload's network namespace
(`docker run --network container:ID`) using the API image, which has Python: the view of the network
(addresses, DNS through Docker's embedded resolver, reachability) is the workload's own.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from conformance.expectations import ENV_FILE_SECRETS, TLS_HOST
from conformance.inventory import API, BY_KEY, TLS_FRONT
from targets.base import (
    PROBE_SCRIPT,
    ExecResult,
    LocalEndpoint,
    Probe,
    ProbeError,
    ProbeResult,
    SecretStore,
    ServedTls,
    ServiceState,
    Serving,
    Target,
    TargetUnreachable,
    WorkloadSpec,
    decode_batch,
)
from targets.envfile import ENV_FILE, REPO, read_env_file

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NO_EXECUTABLE = ("executable file not found", "no such file or directory")
TLS_DIR = "/etc/nginx/tls"  # where the TLS front (sb_ingress) mounts infra/tls/


class ComposeTarget(Target):
    env = "dev"

    def describe(self) -> str:
        return f"compose project {self.project}"

    def __init__(self, project: str, docker: str = "docker", exec_timeout: float = 30.0,
                 env_file: Path = ENV_FILE) -> None:
        self.project = project
        self.env_file = env_file  # what the stack was started with: its ports and credentials
        self.docker = docker
        self.exec_timeout = exec_timeout
        self._containers: dict[str, dict[str, Any]] | None = None  # compose service -> docker inspect
        self._no_python: set[str] = set()

    # -- discovery -----------------------------------------------------------------------------------
    def _run(self, args: Sequence[str], timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.docker, *args], capture_output=True, text=True, timeout=timeout, check=False)

    def check_reachable(self) -> None:
        if shutil.which(self.docker) is None:
            raise TargetUnreachable(
                f"it needs the docker CLI, and `{self.docker}` is not on PATH. "
                "Install Docker (scripts/docker_engine.sh) and start the stack: make up")
        try:
            info = self._run(["info", "--format", "{{.ServerVersion}}"], timeout=15)
        except subprocess.TimeoutExpired as exc:
            raise TargetUnreachable("the Docker daemon did not answer `docker info` within 15 s") from exc
        if info.returncode != 0:
            raise TargetUnreachable(
                f"the Docker daemon is not reachable ({info.stderr.strip().splitlines()[-1:] or 'no output'}). "
                "Start it (scripts/docker_engine.sh) and the stack: make up")
        running = self.containers(refresh=True)
        if not running:
            raise TargetUnreachable(
                f"compose project {self.project!r} has no running containers. Start the stack with "
                "`make up` (or scripts/stack.sh up), or name another project with --compose-project")
        if API.compose not in running:
            raise TargetUnreachable(
                f"compose project {self.project!r} runs {sorted(running)} but not the API service "
                f"{API.compose!r}: the suite probes from inside it")

    def containers(self, refresh: bool = False) -> dict[str, dict[str, Any]]:
        """Running containers of the project by compose service (docker inspect documents)."""
        if self._containers is not None and not refresh:
            return self._containers
        listed = self._run(["ps", "-q", "--filter", f"label={PROJECT_LABEL}={self.project}"])
        if listed.returncode != 0:
            raise TargetUnreachable(f"`docker ps` failed: {listed.stderr.strip()}")
        ids = listed.stdout.split()
        found: dict[str, dict[str, Any]] = {}
        if ids:
            inspected = self._run(["inspect", *ids])
            if inspected.returncode != 0:
                raise TargetUnreachable(f"`docker inspect` failed: {inspected.stderr.strip()}")
            for doc in json.loads(inspected.stdout):
                service = (doc.get("Config", {}).get("Labels") or {}).get(SERVICE_LABEL)
                if service and doc.get("State", {}).get("Running"):
                    found.setdefault(service, doc)
        self._containers = found
        return found

    def _service(self, workload: str) -> str:
        return BY_KEY[workload].compose if workload in BY_KEY else workload

    def container(self, workload: str) -> dict[str, Any]:
        service = self._service(workload)
        doc = self.containers().get(service)
        if doc is None:
            raise ProbeError(f"compose service {service!r} of project {self.project!r} has no running container")
        return doc

    def workload_names(self) -> list[str]:
        running = self.containers()
        return [s.key for s in BY_KEY.values() if s.compose in running]

    def networks(self, workload: str) -> dict[str, str]:
        """The compose networks (short names) the workload's container is on, with its address on each."""
        nets = self.container(workload).get("NetworkSettings", {}).get("Networks") or {}
        prefix = f"{self.project}_"
        return {(n[len(prefix):] if n.startswith(prefix) else n): v.get("IPAddress", "") for n, v in nets.items()}

    def published_port(self, workload: str, container_port: int) -> int | None:
        ports = self.container(workload).get("NetworkSettings", {}).get("Ports") or {}
        for binding in ports.get(f"{container_port}/tcp") or []:
            if binding.get("HostIp") in ("127.0.0.1", "0.0.0.0", ""):
                return int(binding["HostPort"])
        return None

    def local_endpoint(self, workload: str, port: int) -> LocalEndpoint:
        """127.0.0.1 and the port compose publishes `port` on; none when the workload does not run (nothing to
        say) or runs unpublished (noted)."""
        try:
            published = self.published_port(workload, port)
        except ProbeError:
            return LocalEndpoint(None)
        if published is None:
            return LocalEndpoint(None, f"{self._service(workload)}:{port} runs but is not published on 127.0.0.1")
        return LocalEndpoint(f"127.0.0.1:{published}")

    # -- probes --------------------------------------------------------------------------------------
    def run_probes(self, workload: str, probes: Sequence[Probe]) -> list[ProbeResult]:
        if not probes:
            return []
        doc = self.container(workload)
        cid, name = doc["Id"], doc["Name"].lstrip("/")
        payload = json.dumps([p.payload() for p in probes])
        if cid not in self._no_python:
            proc = self._exec(["exec", "-i", cid, "python3", "-c", PROBE_SCRIPT, payload], name)
            if proc.returncode == 0:
                return decode_batch(probes, proc.stdout, f"container {name}")
            if proc.returncode not in (126, 127) and not any(s in proc.stderr for s in NO_EXECUTABLE):
                raise ProbeError(f"container {name}: the probe exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
            self._no_python.add(cid)
        helper_image = self.container("somabrain")["Config"]["Image"]
        proc = self._exec(["run", "--rm", "-i", "--network", f"container:{cid}", "--entrypoint", "python3",
                           helper_image, "-c", PROBE_SCRIPT, payload], name)
        if proc.returncode != 0:
            raise ProbeError(f"container {name} has no python3, and the helper probe in its network namespace "
                             f"exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
        return decode_batch(probes, proc.stdout, f"helper in {name}'s network namespace")

    def _exec(self, args: list[str], name: str) -> subprocess.CompletedProcess[str]:
        try:
            return self._run(args, timeout=self.exec_timeout)
        except subprocess.TimeoutExpired as exc:
            raise ProbeError(f"container {name}: the probe did not finish within {self.exec_timeout:.0f} s") from exc

    def exec(self, workload: str, argv: Sequence[str], stdin: bytes | None = None, sink: IO[bytes] | None = None,
             timeout: float = 600.0) -> ExecResult:
        doc = self.container(workload)
        name = doc["Name"].lstrip("/")
        cmd = [self.docker, "exec", *(["-i"] if stdin is not None else []), doc["Id"], *argv]
        try:
            proc = subprocess.run(cmd, input=stdin, stdout=sink if sink is not None else subprocess.PIPE,
                                  stderr=subprocess.PIPE, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ProbeError(f"container {name}: {argv[0]} did not finish within {timeout:.0f} s") from exc
        out = proc.stdout if sink is None else b""
        return ExecResult(proc.returncode, out or b"", proc.stderr.decode("utf-8", "replace"), f"container {name}")

    # -- declarations --------------------------------------------------------------------------------
    def declared(self, workload: str) -> WorkloadSpec:
        service = self._service(workload)
        doc = self.containers().get(service)
        if doc is None:
            return WorkloadSpec(workload, {}, ready=False, detail=f"no running container for {service!r}")
        config, host = doc.get("Config") or {}, doc.get("HostConfig") or {}
        env = dict(item.split("=", 1) for item in config.get("Env") or [] if "=" in item)
        health = (doc.get("State") or {}).get("Health") or {}
        status = health.get("Status", "none")
        probes = {"healthcheck": config["Healthcheck"]} if config.get("Healthcheck") else {}
        name = doc["Name"].lstrip("/")
        return WorkloadSpec(
            name=workload,
            env=env,
            memory_limit_bytes=host.get("Memory") or None,
            cpu_limit=(host.get("NanoCpus") or 0) / 1e9 or None,
            probes=probes,
            ready=status == "healthy",
            replicas={name: status == "healthy"},
            detail=f"container {name} health: {status}",
        )

    # -- serving state -------------------------------------------------------------------------------
    def states(self) -> dict[str, tuple[str, str, str]]:
        """compose service -> (container name, state, health) for every container of the project, stopped ones
        too (a running one wins over an exited one of the same service)."""
        fmt = "{{.Label \"" + SERVICE_LABEL + "\"}}\t{{.Names}}\t{{.State}}\t{{.Status}}"
        proc = self._run(["ps", "-a", "--filter", f"label={PROJECT_LABEL}={self.project}", "--format", fmt])
        states: dict[str, tuple[str, str, str]] = {}
        for row in proc.stdout.splitlines():
            parts = row.split("\t")
            if len(parts) == 4 and parts[0]:
                health = "healthy" if "(healthy)" in parts[3] else "unhealthy" if "unhealthy" in parts[3] else (
                    "starting" if "health: starting" in parts[3] else "none")
                if parts[0] not in states or parts[2] == "running":
                    states[parts[0]] = (parts[1], parts[2], health)
        return states

    def serving(self, services: Sequence[Any]) -> Serving:
        states = self.states()
        found: list[ServiceState] = []
        for svc in services:
            state = states.get(svc.compose)
            if state is None:
                found.append(ServiceState(svc.key, "FAIL", f"compose service {svc.compose} has no container",
                                          f"docker compose -p {self.project} --env-file {self.env_file} -f "
                                          f"compose/docker-compose.yml up -d {svc.compose}"))
            elif state[1] != "running":
                found.append(ServiceState(svc.key, "FAIL", f"{state[0]} is {state[1]}",
                                          f"docker start {state[0]}\n{self.logs_command(svc.key)}"))
            elif state[2] in ("unhealthy", "starting"):
                found.append(ServiceState(svc.key, "WARN", f"{state[0]} is running but {state[2]}",
                                          f"docker inspect --format '{{{{json .State.Health}}}}' {state[0]}\n"
                                          f"{self.logs_command(svc.key)}"))
            else:
                found.append(ServiceState(svc.key, "OK", f"{state[0]} is running", label=svc.compose))
        good = [s.label for s in found if s.level == "OK"]
        return Serving("services", tuple(found), f"{len(good)} containers running and healthy ({', '.join(good)})")

    def bootstrap(self, steps: Sequence[Any]) -> list[ServiceState]:
        """Each step's container and how it exited (compose keeps an exited one-shot's container; the apps start
        only once it exited 0: `depends_on: service_completed_successfully`)."""
        states = self.states()
        found: list[ServiceState] = []
        for step in steps:
            state = states.get(step.compose)
            apps = " and ".join(step.of)
            if state is None:
                found.append(ServiceState(step.key, "WARN", f"compose service {step.compose} has no container "
                                          f"(it runs once, before {apps} start)",
                                          f"{self._compose()} up -d {step.compose}"))
                continue
            name = state[0]
            if state[1] == "running":
                found.append(ServiceState(step.key, "WARN", f"{name} is still running: {apps} wait for it",
                                          self.logs_command(step.compose)))
                continue
            inspected = self._run(["inspect", "--format", "{{.State.ExitCode}}", name])
            code = inspected.stdout.strip()
            if inspected.returncode == 0 and code == "0":
                found.append(ServiceState(step.key, "OK", f"{name} exited 0", label=step.compose))
            else:
                why = f"exited {code}" if inspected.returncode == 0 and code else f"is {state[1]}"
                again = " ".join(self._service(app) for app in step.of)  # compose runs the step again first
                found.append(ServiceState(step.key, "FAIL", f"{name} {why}: {apps} do not start until it exits 0",
                                          f"{self.logs_command(step.compose)}\n{self._compose()} up -d {again}"))
        return found

    def served_tls(self) -> ServedTls | None:
        """The certificate files the TLS front mounts (compose service sb_ingress, /etc/nginx/tls <- infra/tls/);
        None when the front is not running (dev serves plain HTTP without it)."""
        try:
            mounts = self.container(TLS_FRONT.key).get("Mounts") or []
        except ProbeError:
            return None
        source = next((m.get("Source") for m in mounts if m.get("Destination") == TLS_DIR), None)
        if not source:
            return ServedTls(f"{TLS_FRONT.compose}:{TLS_DIR}", None, None, self.status_command(TLS_FRONT.key),
                             problem=f"{TLS_FRONT.compose} mounts nothing at {TLS_DIR} "
                                     "(compose/docker-compose.yml: ../infra/tls)")
        crt, key = Path(source) / f"{TLS_HOST}.crt", Path(source) / f"{TLS_HOST}.key"
        return ServedTls(f"{TLS_FRONT.compose}:{TLS_DIR} ({source})", crt.read_bytes() if crt.is_file() else None,
                         key.read_bytes() if key.is_file() else None, f"openssl x509 -in {crt} -text -noout")

    # -- configuration -------------------------------------------------------------------------------
    def secret_store(self, name: str) -> SecretStore:
        if name not in ENV_FILE_SECRETS:
            raise ProbeError(f"the dev stack keeps no Secret {name!r} in {self.env_file} "
                             f"(it keeps {sorted(ENV_FILE_SECRETS)})")
        return EnvFileSecret(self.env_file, ENV_FILE_SECRETS[name])

    def _up_command(self, workloads: Sequence[str]) -> list[str]:
        return [self.docker, "compose", "-p", self.project, "--env-file", str(self.env_file),
                "-f", str(REPO / "compose/docker-compose.yml"), "-f", str(REPO / "compose/docker-compose.airgap.yml"),
                "up", "-d", "--no-deps", "--no-build", "--wait", *(self._service(w) for w in workloads)]

    def roll(self, workloads: Sequence[str], timeout: float) -> list[str]:
        """`docker compose up -d --no-deps --wait`: recreates each container whose configuration (the env file's
        values in it) changed, and waits for its healthcheck."""
        cmd = self._up_command(workloads)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return [f"`docker compose ... up` did not finish within {timeout:.0f} s"]
        self.containers(refresh=True)
        if proc.returncode != 0:
            return [f"`docker compose ... up` failed: {proc.stderr.strip()[-400:]}"]
        return []

    def roll_command(self, workloads: Sequence[str]) -> str:
        return (f"docker compose -p {self.project} --env-file {self.env_file} -f compose/docker-compose.yml "
                f"up -d --no-deps --wait {' '.join(self._service(w) for w in workloads)}")

    # -- the next commands ---------------------------------------------------------------------------
    def _compose(self) -> str:
        return f"docker compose -p {self.project}"

    def logs_command(self, key: str) -> str:
        return f"{self._compose()} logs --tail 50 {self._service(key)}"

    def restart_command(self, key: str) -> str:
        return f"{self._compose()} restart {self._service(key)}"

    def status_command(self, key: str | None = None) -> str:
        return f"{self._compose()} ps -a" + (f" {self._service(key)}" if key else "")

    def exec_command(self, workload: str, argv: str) -> str:
        try:
            name = str(self.container(workload)["Name"]).lstrip("/")
        except ProbeError:
            name = f"{self.project}-{self._service(workload)}-1"
        return f"docker exec -it {shlex.quote(name)} {argv}"


class EnvFileSecret(SecretStore):
    """A Secret's keys in the compose env file, under the env file's names (conformance.expectations
    .ENV_FILE_SECRETS); compose passes them into the services' environment when they are recreated."""

    def __init__(self, path: Path, keys: Mapping[str, str]) -> None:
        self.path, self.keys = path, keys
        self.where = str(path)

    def key_name(self, key: str) -> str:
        return self.keys[key]

    def read(self) -> dict[str, str]:
        values = read_env_file(self.path)
        return {ours: values[theirs] for ours, theirs in self.keys.items() if theirs in values}

    def write(self, changes: Mapping[str, str | None]) -> None:
        """Set or remove KEY=VALUE lines, keeping every other line; atomic (a temporary file renamed over the
        file), so a failed write leaves it as it was."""
        named = {self.keys[key]: value for key, value in changes.items()}
        lines = self.path.read_text(encoding="utf-8").splitlines()
        out = [line for line in lines if line.partition("=")[0] not in named]
        out += [f"{key}={value}" for key, value in named.items() if value is not None]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("\n".join(out) + "\n", encoding="utf-8")
        tmp.chmod(self.path.stat().st_mode & 0o777)
        tmp.replace(self.path)
