"""Fixtures for the operator tools' unit tests of error paths: the writable Kubernetes API fake (kube_fake.py, the
one fake of the tree: see its docstring for why) wired to real local servers. The success paths run on the real
cluster (tests/cluster/)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.servers import PostgresServer, RedisServer
from tests.targets.conftest import Cert, make_cert, tls_secret
from tests.targets.kube_fake import HealthServer, WritableCluster, network_exec

REPO = Path(__file__).resolve().parents[2]
BAD_IMAGE = "registry.example/somabrain:does-not-exist"
STUB_IMAGE = "registry.example/somabrain:v2-stub"

READY_HEALTH: dict[str, Any] = {
    "ok": True,
    "components": {
        "memory": {"http": True, "status": 200}, "wm_items": "tenant-scoped", "redis": {"ok": True},
        "predictor": {"ok": True, "provider": "mahal", "real": True, "warmed": True}, "postgres": {"ok": True},
        "opa": {"ok": True, "fail_closed": True}, "kafka": {"ok": True},
    },
    "predictor_provider": "mahal", "strict_real": True, "ready": True, "failing": [],
}


def stub_health() -> dict[str, Any]:
    doc = copy.deepcopy(READY_HEALTH)
    doc["predictor_provider"] = "stub"
    doc["components"]["predictor"].update(provider="stub", real=False)
    doc["ready"] = False
    return doc


@dataclass
class Cluster:
    fake: WritableCluster
    kubeconfig: Path
    health: HealthServer

    def args(self) -> list[str]:
        return ["--kubeconfig", str(self.kubeconfig)]


@pytest.fixture
def cluster(tmp_path: Path, redis_server: RedisServer, postgres_server: PostgresServer) -> Iterator[Cluster]:
    """The fake API from k8s/, with the TLS Secret, whose exec reaches this test run's real Redis and Postgres
    for sb-redis/postgres, and canned answers for the API's /health, SomaMemory and OPA."""
    health = HealthServer({"ready": READY_HEALTH, "stub": stub_health(), "somamemory": {"ok": True},
                           "opa": {}})
    routes = {"redis": redis_server.port, "postgres": postgres_server.port, "somamemory": health.port,
              "opa": health.port}
    handler = network_exec(routes, health, lambda pod: "stub" if "stub" in pod["spec"]["containers"][0]["image"]
                           else "ready")
    fake = WritableCluster.from_k8s_dir(REPO / "k8s", exec_handler=handler, bad_images=(BAD_IMAGE,))
    cert: Cert = make_cert()
    fake.add(tls_secret(cert))
    config = fake.kubeconfig(tmp_path / "kubeconfig", fake.start())
    yield Cluster(fake, config, health)
    fake.stop()
    health.stop()
