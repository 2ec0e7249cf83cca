"""Dev sampler: parsing of real Docker Engine API answers (fixtures recorded from the compose stack on Docker
20.10, cgroup v1), and live runs (marked `live`: Docker and the stack's base image) against throw-away containers
this test starts (one OOM-killed on purpose)."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from load.docker_api import DockerAPI, DockerUnavailable
from load.samplers.docker_stats import (
    CpuMeter,
    DockerSampler,
    event_from_docker,
    limits_from_inspect,
    parse_timestamp,
    sample_from_stats,
    working_set,
)
from tests.load.recorded import fixture_json


def test_timestamp_with_nanoseconds() -> None:
    assert parse_timestamp("2026-11-28T17:07:39.018284536Z") == pytest.approx(1795885659.018284536, abs=1e-6)
    assert parse_timestamp("2026-11-28T17:07:39Z") == 1795885659.0


def test_working_set_subtracts_inactive_file_cache() -> None:
    stats = fixture_json("docker_stats_somabrain_1.json")["memory_stats"]
    expected = stats["usage"] - stats["stats"]["total_inactive_file"]
    assert working_set(stats) == expected
    assert working_set({"usage": 1000, "stats": {"inactive_file": 300}}) == 700  # cgroup v2 key
    assert working_set({}) is None  # a stopped container


def test_limits_from_container_config() -> None:
    inspect = fixture_json("docker_inspect_somabrain.json")
    assert limits_from_inspect(inspect) == (512 * 2**20, 1.0)
    assert limits_from_inspect({"HostConfig": {"Memory": 0, "NanoCpus": 0, "CpuQuota": 50000,
                                               "CpuPeriod": 100000}}) == (None, 0.5)
    assert limits_from_inspect({"HostConfig": {}}) == (None, None)


def test_cpu_from_two_readings() -> None:
    first, second = fixture_json("docker_stats_somabrain_1.json"), fixture_json("docker_stats_somabrain_2.json")
    meter = CpuMeter()
    assert meter.cores("c", first) is None
    cores = meter.cores("c", second)
    used = (second["cpu_stats"]["cpu_usage"]["total_usage"] - first["cpu_stats"]["cpu_usage"]["total_usage"]) / 1e9
    elapsed = parse_timestamp(second["read"]) - parse_timestamp(first["read"])
    assert cores == pytest.approx(used / elapsed)
    assert 0 <= cores < 2


def test_counter_reset_gives_no_cpu_reading() -> None:
    meter = CpuMeter()
    meter.cores("c", {"read": "2026-11-28T17:00:00Z", "cpu_stats": {"cpu_usage": {"total_usage": 10**10}}})
    assert meter.cores("c", {"read": "2026-11-28T17:00:01Z", "cpu_stats": {"cpu_usage": {"total_usage": 5}}}) is None


def test_sample_from_recorded_stats() -> None:
    stats, inspect = fixture_json("docker_stats_redis.json"), fixture_json("docker_inspect_somabrain.json")
    sample = sample_from_stats("sb_redis", stats, inspect, 0.05)
    assert sample.workload == "sb_redis"
    assert sample.memory_bytes == working_set(stats["memory_stats"])
    assert sample.periods == stats["cpu_stats"]["throttling_data"]["periods"]
    assert sample.throttled_periods == stats["cpu_stats"]["throttling_data"]["throttled_periods"]
    assert sample.running is True


def test_events_of_interest() -> None:
    oom = {"status": "oom", "id": "abc", "Type": "container", "Action": "oom",
           "Actor": {"ID": "abc", "Attributes": {"com.docker.compose.service": "somabrain", "name": "x"}},
           "time": 1795885659, "timeNano": 1795885659123456789}
    event = event_from_docker(oom)
    assert event is not None and (event.kind, event.workload) == ("oom", "somabrain")
    assert event.t == pytest.approx(1795885659.123456789)
    die = {**oom, "status": "die", "Action": "die",
           "Actor": {"ID": "abc", "Attributes": {"com.docker.compose.service": "somabrain", "exitCode": "137"}}}
    assert event_from_docker(die).detail == "exitCode=137"  # type: ignore[union-attr]
    healthcheck = {**oom, "status": "exec_die", "Action": "exec_die"}
    assert event_from_docker(healthcheck) is None


def test_unreachable_docker_is_a_clear_error(tmp_path: object) -> None:
    api = DockerAPI(socket_path="/nonexistent/docker.sock")
    with pytest.raises(DockerUnavailable, match="does not answer"):
        api.ping()


# -- live: containers this test starts ---------------------------------------------------------------------------
@pytest.fixture
def project() -> Iterator[str]:
    name = f"sbload-test-{uuid.uuid4().hex[:8]}"
    yield name
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={name}"],
                         capture_output=True, text=True, check=False).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)


def start(project: str, service: str, image: str, *command: str, memory: str = "64m", cpus: str = "0.2",
          extra: tuple[str, ...] = ()) -> str:
    done = subprocess.run(
        ["docker", "run", "-d", *extra, "--label", f"com.docker.compose.project={project}",
         "--label", f"com.docker.compose.service={service}", "--memory", memory, "--memory-swap", memory,
         "--cpus", cpus, "--network", "none", image, *command], capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.mark.live
def test_live_sampling_reads_limits_and_usage(project: str, base_image: str) -> None:
    start(project, "sleeper", base_image, "sleep", "120", memory="48m", cpus="0.3")
    sampler = DockerSampler(project)
    sampler.check()
    sampler.started_at = time.time()
    sampler.tick()
    sampler.tick()
    samples = sampler.recording.samples
    assert [s.workload for s in samples] == ["sleeper", "sleeper"]
    assert samples[0].memory_limit == 48 * 2**20
    assert samples[0].cpu_limit == pytest.approx(0.3)
    assert samples[0].memory_bytes is not None and 0 < samples[0].memory_bytes < 48 * 2**20
    assert samples[1].cpu_cores is not None and samples[1].cpu_cores >= 0
    assert sampler.recording.errors == []


@pytest.mark.live
def test_live_oom_kill_is_detected(project: str, base_image: str) -> None:
    sampler = DockerSampler(project)
    sampler.started_at = time.time() - 1
    container = start(project, "hog", base_image, "python3", "-c",
                      "import time; time.sleep(2); b = bytearray(256 * 2**20); time.sleep(60)", memory="32m")
    sampler.tick()
    waited = subprocess.run(["docker", "wait", container], capture_output=True, text=True, timeout=60, check=True)
    assert waited.stdout.strip() == "137"
    sampler.tick()  # sees it stopped
    sampler.finish()
    kinds = {e.kind for e in sampler.recording.events if e.workload == "hog"}
    assert "oom" in kinds
    assert any(not s.running for s in sampler.recording.samples)


@pytest.mark.live
def test_live_restarts_by_restart_policy_are_counted(project: str, base_image: str) -> None:
    """A restart policy restarts without a `restart` event: the RestartCount delta still counts every restart."""
    sampler = DockerSampler(project)
    sampler.started_at = time.time() - 1
    container = start(project, "crasher", base_image, "python3", "-c",
                      "import time; time.sleep(1.5); raise SystemExit(3)", extra=("--restart", "on-failure:2"))
    sampler.tick()  # records the initial RestartCount (0)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        state = subprocess.run(["docker", "inspect", "-f", "{{.RestartCount}} {{.State.Running}}", container],
                               capture_output=True, text=True, check=True).stdout.split()
        if state == ["2", "false"]:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the container did not restart twice and stop: {state}")
    sampler.finish()
    restarts = [e for e in sampler.recording.events if e.workload == "crasher" and e.kind == "restart"]
    assert len(restarts) == 2
    assert sum(1 for e in sampler.recording.events if e.workload == "crasher" and e.kind == "die") == 3


@pytest.mark.live
def test_unknown_project_is_a_clear_error(base_image: str) -> None:
    with pytest.raises(DockerUnavailable, match="has no containers"):
        DockerSampler(f"sbload-absent-{uuid.uuid4().hex[:6]}").check()
