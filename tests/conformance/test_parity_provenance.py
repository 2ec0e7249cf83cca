"""Each finding says where its prod side is written (conformance/parity/provenance.py, from kustomize's own
origin annotations): the file of k8s/ and the object, in JSON, text and markdown."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.__main__ import main
from tests.conformance.gate import container, edit_k8s, run_gate

BASE = Path("k8s") / "base"


def _redis_image(tree: Path) -> None:
    edit_k8s(tree / BASE / "redis.yaml", "Deployment", "sb-redis",
             lambda o: container(o).update(image="redis:7.4-alpine"))


def test_a_drift_names_the_file_and_object_it_comes_from(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _redis_image(tree)
    result = run_gate(tree, capsys)
    assert result.by_subject("image", "sb_redis")["prod_from"] == "base/redis.yaml (Deployment/sb-redis)"
    connectivity = next(f for f in result.findings if f["dimension"] == "connectivity")
    assert connectivity["prod_from"] == "base/networkpolicies.yaml"
    assert result.by_subject("mapping", "kafka").get("prod_from") is None  # external: nothing in k8s/ to name


def test_a_patch_from_an_overlay_still_names_the_base_file(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """kustomize records where an object was declared, not which patch touched it: an overlay's change is
    reported against the base object it changes."""
    overlay = tree / "redis-next"  # outside k8s/: kustomize refuses an overlay inside the root it includes
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(
        "resources: [../k8s]\nimages:\n  - {name: redis, newTag: 7.4-alpine}\n")
    result = run_gate(tree, capsys, "--k8s", str(overlay))
    assert result.code == 1, result.stderr
    # outside a git checkout, files outside the rendered directory are named by their full path
    assert result.by_subject("image", "sb_redis")["prod_from"] == f"{tree}/k8s/base/redis.yaml (Deployment/sb-redis)"


@pytest.mark.parametrize(("fmt", "expected"), [
    ("text", "from: base/redis.yaml (Deployment/sb-redis)"),
    ("markdown", "<sub>base/redis.yaml (Deployment/sb-redis)</sub>"),
])
def test_the_reports_show_it(tree: Path, capsys: pytest.CaptureFixture[str], fmt: str, expected: str) -> None:
    _redis_image(tree)
    code = main(["parity", "--compose", str(tree / "compose" / "docker-compose.yml"), "--k8s", str(tree / "k8s"),
                 "--format", fmt])
    assert code == 1
    assert expected in capsys.readouterr().out
