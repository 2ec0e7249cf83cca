"""`somabrain rollout` against the writable Kubernetes API fake: a good image rolls out and passes the conformance
readiness rules; an image that cannot be pulled, and one whose predictor is the stub, are rolled back."""

from __future__ import annotations

import pytest

from ops import rollout
from tests.ops.conftest import BAD_IMAGE, STUB_IMAGE, Cluster

GOOD_IMAGE = "registry.example/somabrain:v2.0.0"


def images(cluster: Cluster) -> dict[str, str]:
    return {name: cluster.fake.find("Deployment", "somabrain-prod", name)["spec"]["template"]["spec"]
            ["containers"][0]["image"] for name in rollout.WORKLOADS}


def test_good_image_rolls_out(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    code = rollout.main([GOOD_IMAGE, *cluster.args(), "--timeout", "30"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert images(cluster) == {"somabrain": GOOD_IMAGE, "somamemory": GOOD_IMAGE}
    assert "successfully rolled out" in out and "readiness" in out and "OK" in out
    pods = [p for p in cluster.fake.find("Pod", "somabrain-prod") if p["metadata"]["labels"].get("app") == "somabrain"]
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {GOOD_IMAGE}


def test_unpullable_image_is_rolled_back(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    before = images(cluster)
    code = rollout.main([BAD_IMAGE, *cluster.args(), "--timeout", "30"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "ROLLOUT FAILED" in out and "ImagePullBackOff" in out
    assert "rolled back to the previous image" in out
    assert images(cluster) == before
    pods = [p for p in cluster.fake.find("Pod", "somabrain-prod") if p["metadata"]["labels"].get("app") == "somabrain"]
    assert pods and all(p["status"]["phase"] == "Running" for p in pods)


def test_stub_predictor_fails_readiness_and_is_rolled_back(cluster: Cluster,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    before = images(cluster)
    code = rollout.main([STUB_IMAGE, *cluster.args(), "--timeout", "30", "--settle", "3"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "conformance readiness checks fail" in out
    assert "predictor_provider is 'stub'" in out
    assert images(cluster) == before


def test_only_one_deployment(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    before = images(cluster)
    assert rollout.main([GOOD_IMAGE, "--only", "somabrain", *cluster.args()]) == 0
    assert images(cluster) == {"somabrain": GOOD_IMAGE, "somamemory": before["somamemory"]}


def test_usage_errors(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        rollout.main([])
    assert exc.value.code == 3
    assert rollout.main(["bad image", "--kubeconfig", "/nonexistent"]) == 3
    assert rollout.main(["x:1", "--kubeconfig", "/nonexistent/kubeconfig"]) == 3
    assert "Kubernetes" in capsys.readouterr().err
