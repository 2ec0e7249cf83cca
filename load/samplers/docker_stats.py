"""Dev: sample every container of a compose project through the Docker Engine API.

Per tick, one `GET /containers/json` (who exists and runs) and one one-shot `GET /containers/{id}/stats` per
running container. Memory is the working set (usage minus inactive file cache: cgroup v1 `total_inactive_file`,
v2 `inactive_file`), as `docker stats` and the kubelet count it. CPU is the delta of `cpu_usage.total_usage`
between two readings over the delta of their `read` timestamps. Limits come from the container config
(HostConfig.Memory, NanoCpus or CpuQuota/CpuPeriod). After the run, the events API gives OOM kills, deaths and
restarts; the last inspect gives RestartCount and State.OOMKilled.
"""

from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from load.docker_api import DockerAPI, DockerUnavailable
from load.model import Event, Sample
from load.samplers.base import Sampler
from targets.compose import SERVICE_LABEL

EVENT_KINDS = {"oom": "oom", "die": "die", "restart": "restart", "start": "start", "kill": "kill"}


def parse_timestamp(text: str) -> float:
    """Docker's RFC 3339 with nanoseconds ("2026-11-28T17:07:39.018284536Z") -> unix seconds."""
    text = text.rstrip("Z")
    whole, _, frac = text.partition(".")
    base = dt.datetime.fromisoformat(whole).replace(tzinfo=dt.UTC).timestamp()
    return base + (float(f"0.{frac}") if frac else 0.0)


def working_set(memory_stats: dict[str, Any]) -> int | None:
    usage = memory_stats.get("usage")
    if usage is None:
        return None  # a stopped container reports empty memory_stats
    stats = memory_stats.get("stats", {})
    inactive = stats.get("total_inactive_file", stats.get("inactive_file", 0))
    return int(max(0, usage - inactive))


def limits_from_inspect(inspect: dict[str, Any]) -> tuple[int | None, float | None]:
    host = inspect.get("HostConfig", {})
    memory = int(host.get("Memory") or 0) or None
    cpus: float | None = None
    if host.get("NanoCpus"):
        cpus = host["NanoCpus"] / 1e9
    elif host.get("CpuQuota", 0) > 0:
        cpus = host["CpuQuota"] / (host.get("CpuPeriod") or 100_000)
    return memory, cpus


class CpuMeter:
    """Turns cumulative `total_usage` readings into cores used between consecutive readings."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def cores(self, key: str, stats: dict[str, Any]) -> float | None:
        usage = stats.get("cpu_stats", {}).get("cpu_usage", {}).get("total_usage")
        if usage is None or not stats.get("read"):
            return None
        read = parse_timestamp(stats["read"])
        previous = self._last.get(key)
        self._last[key] = (read, int(usage))
        if previous is None or read <= previous[0] or usage < previous[1]:
            return None  # first reading, or the counter restarted with the container
        return float((usage - previous[1]) / 1e9 / (read - previous[0]))


def sample_from_stats(workload: str, stats: dict[str, Any], inspect: dict[str, Any], cpu: float | None,
                      t: float | None = None) -> Sample:
    memory_limit, cpu_limit = limits_from_inspect(inspect)
    throttling = stats.get("cpu_stats", {}).get("throttling_data", {})
    return Sample(
        t=parse_timestamp(stats["read"]) if t is None else t,
        workload=workload,
        memory_bytes=working_set(stats.get("memory_stats", {})),
        memory_limit=memory_limit,
        cpu_cores=cpu,
        cpu_limit=cpu_limit,
        throttled_periods=throttling.get("throttled_periods"),
        periods=throttling.get("periods"),
        running=bool(inspect.get("State", {}).get("Running", True)),
        restart_count=int(inspect.get("RestartCount", 0)),
    )


def event_from_docker(message: dict[str, Any]) -> Event | None:
    kind = EVENT_KINDS.get(str(message.get("status") or message.get("Action", "")))
    if kind is None:
        return None
    attributes = message.get("Actor", {}).get("Attributes", {})
    t = message["timeNano"] / 1e9 if "timeNano" in message else float(message.get("time", 0))
    detail = f"exitCode={attributes['exitCode']}" if "exitCode" in attributes else ""
    return Event(t=t, workload=attributes.get(SERVICE_LABEL, attributes.get("name", "?")), kind=kind, detail=detail)


class DockerSampler(Sampler):
    source = "docker stats"
    def __init__(self, project: str, api: DockerAPI | None = None) -> None:
        super().__init__()
        self.project = project
        self.api = api or DockerAPI()
        self.cpu = CpuMeter()
        self._inspect: dict[str, dict[str, Any]] = {}  # container id -> inspect (limits, start restart count)
        self._initial: dict[str, dict[str, Any]] = {}
        # The engine answers a stats call at its next collection cycle (about 1 s), even one-shot: ask for
        # every container at once so one tick takes about one second whatever the number of containers.
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="docker-stats")

    def check(self) -> None:
        self.api.ping()
        if not self.api.containers(self.project):
            raise DockerUnavailable(
                f"compose project {self.project!r} has no containers; start the stack (make up) or pass --project")

    def _inspected(self, container_id: str) -> dict[str, Any]:
        if container_id not in self._inspect:
            self._inspect[container_id] = self.api.inspect(container_id)
            self._initial.setdefault(container_id, self._inspect[container_id])
        return self._inspect[container_id]

    def tick(self) -> None:
        running: list[tuple[str, str]] = []
        for container in self.api.containers(self.project):
            workload = container.get("Labels", {}).get(SERVICE_LABEL, container["Names"][0].lstrip("/"))
            inspect = self._inspected(container["Id"])
            if container.get("State") != "running":
                memory_limit, cpu_limit = limits_from_inspect(inspect)
                self.recording.samples.append(Sample(time.time(), workload, None, memory_limit, None, cpu_limit,
                                                     running=False))
                self._inspect.pop(container["Id"], None)  # re-read state and restart count if it comes back
                continue
            running.append((container["Id"], workload))
        readings = self._pool.map(lambda item: self.api.stats(item[0]), running)
        for (container_id, workload), stats in zip(running, readings, strict=True):
            cores = self.cpu.cores(container_id, stats)
            self.recording.samples.append(sample_from_stats(workload, stats, self._inspected(container_id), cores))

    def finish(self) -> None:
        self._pool.shutdown(wait=True)
        until = time.time()
        for message in self.api.events(self.project, self.started_at, until):
            event = event_from_docker(message)
            if event is not None:
                self.recording.events.append(event)
        for container_id, initial in self._initial.items():
            try:
                now = self.api.inspect(container_id)
            except KeyError:
                workload = initial.get("Config", {}).get("Labels", {}).get(SERVICE_LABEL, container_id[:12])
                self.recording.events.append(Event(until, workload, "missing", "container removed during the run"))
                continue
            workload = now.get("Config", {}).get("Labels", {}).get(SERVICE_LABEL, container_id[:12])
            # A restart policy restarts a container without a `restart` event (only `die` then `start`), so the
            # RestartCount delta is the count; one event per restart the events API did not already name.
            restarts = int(now.get("RestartCount", 0)) - int(initial.get("RestartCount", 0))
            named = sum(1 for e in self.recording.events if e.workload == workload and e.kind == "restart")
            starts = sorted(e.t for e in self.recording.events if e.workload == workload and e.kind == "start")
            for number in range(named, restarts):
                at = starts[number] if number < len(starts) else until  # placed at the matching `start`
                self.recording.events.append(Event(at, workload, "restart",
                                                   f"RestartCount +{number + 1} (restart policy)"))
            state = now.get("State", {})
            if state.get("OOMKilled") and not any(e.workload == workload and e.kind == "oom"
                                                  for e in self.recording.events):
                finished = state.get("FinishedAt", "")
                t = parse_timestamp(finished) if finished and not finished.startswith("0001") else until
                if t >= self.started_at:
                    self.recording.events.append(Event(t, workload, "oom", "State.OOMKilled"))
