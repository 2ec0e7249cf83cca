"""Fixtures for the operator tools' unit tests of error paths: the writable Kubernetes API fake (kube_fake.py, the
one fake of the tree: see its docstring for why) wired to real local servers. The success paths run on the real
cluster (tests/cluster/). Plain helpers (Cluster, REPO, the images and health documents) are in fake_cluster.py;
Cluster and REPO are imported here too, so the test modules that still name this conftest keep working."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from localservers.servers import PostgresServer, RedisServer
from tests.helpers.certs import Cert, make_cert, tls_secret
from tests.ops.fake_cluster import BAD_IMAGE, READY_HEALTH, REPO, Cluster, stub_health
from tests.targets.kube_fake import HealthServer, WritableCluster, network_exec


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
