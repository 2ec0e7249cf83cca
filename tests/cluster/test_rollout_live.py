"""`somabrain rollout` in a scratch namespace of the real local cluster (`make cluster-test`).

The rollout of a new image and the rollback of one that cannot be pulled are shown on somabrain-prod itself by
tests/cluster/test_tilt_live.py. Here: a rollout whose new pods come up but whose API serves the stub predictor
fails the conformance readiness checks and is rolled back, and `--only somabrain` leaves somamemory alone.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.cluster.live import CONTEXT, REPO, VENV_BIN
from tests.cluster.scratch import IDLE, apply, deployment, get, pods, rolled_out, service

pytestmark = pytest.mark.cluster


def test_a_stub_predictor_fails_readiness_and_only_somabrain_is_rolled_back(scratch_namespace: str) -> None:
    """The real API with SOMABRAIN_PREDICTOR_PROVIDER=stub as Deployment somabrain, an idle somamemory beside it.
    The new image is the same one by its digest: a new pod template, so a real rollout, whose pod turns Ready."""
    ns = scratch_namespace
    apply(ns, deployment("somabrain", args=["api", "--bind", "0.0.0.0:9696"],
                         env={"SOMABRAIN_PREDICTOR_PROVIDER": "stub",
                              "SOMABRAIN_REDIS_URL": f"redis://sb-redis.{ns}.svc.cluster.local:6379/0"},
                         readiness={"tcpSocket": {"port": 9696}, "periodSeconds": 1}),
          service("somabrain", 9696), deployment("somamemory", command=IDLE))
    rolled_out(ns, "somabrain")
    rolled_out(ns, "somamemory")
    before = {name: get(ns, "deployment", name) for name in ("somabrain", "somamemory")}
    tag = before["somabrain"]["spec"]["template"]["spec"]["containers"][0]["image"]
    by_digest = pods(ns, "somabrain")[0]["status"]["containerStatuses"][0]["imageID"]
    assert "@sha256:" in by_digest and by_digest != tag

    run = subprocess.run([str(VENV_BIN / "somabrain"), "rollout", by_digest, "--only", "somabrain", "--namespace", ns,
                          "--kube-context", CONTEXT, "--timeout", "180", "--settle", "0"],
                         cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    out = run.stdout
    print(out[-3000:])
    assert run.returncode == 1, out[-3000:] + run.stderr[-2000:]
    assert f"deployment/somabrain: image {tag} -> {by_digest}" in out
    assert "deployment/somabrain: successfully rolled out" in out  # the new pod came up and turned Ready
    assert "ROLLOUT FAILED: the conformance readiness checks fail after the rollout" in out
    assert "/health predictor_provider is 'stub', must be 'mahal'" in out
    assert f"rollback deployment/somabrain -> {tag}" in out and "rolled back to the previous image(s)" in out
    assert "deployment/somamemory" not in out

    after = {name: get(ns, "deployment", name) for name in ("somabrain", "somamemory")}
    assert after["somabrain"]["spec"]["template"]["spec"]["containers"][0]["image"] == tag
    revision = "deployment.kubernetes.io/revision"
    # rolled (revision 2) and back (the first template again, which the Deployment renumbers 3)
    assert int(after["somabrain"]["metadata"]["annotations"][revision]) == \
        int(before["somabrain"]["metadata"]["annotations"][revision]) + 2
    assert after["somamemory"]["metadata"]["generation"] == before["somamemory"]["metadata"]["generation"]
    assert after["somamemory"]["spec"]["template"] == before["somamemory"]["spec"]["template"]
