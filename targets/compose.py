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
import shutil
import subprocess
from collections.abc import Sequence
from typing import IO, Any

from conformance.inventory import API, BY_KEY
from targets.base import (
    PROBE_SCRIPT,
    ExecResult,
    Probe,
    ProbeError,
    ProbeResult,
    Target,
    TargetUnreachable,
    WorkloadSpec,
    decode_batch,
)

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NO_EXECUTABLE = ("executable file not found", "no such file or directory")


class ComposeTarget(Target):
    env = "dev"

    def describe(self) -> str:
        return f"compose project {self.project}"

    def __init__(self, project: str, docker: str = "docker", exec_timeout: float = 30.0) -> None:
        self.project = project
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
