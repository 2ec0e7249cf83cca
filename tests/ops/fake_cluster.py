"""The fake cluster the operator tools' error-path tests run against: what the `cluster` fixture (conftest.py) yields
(Cluster: the writable Kubernetes API fake of tests/targets/kube_fake.py, its kubeconfig and the canned /health
server), the images it refuses or serves as a stub, and the health documents it answers with."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.targets.kube_fake import HealthServer, WritableCluster

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
