"""The Python kustomize renderer: output equal to `kubectl kustomize` where that exists, clear errors."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.loaders.kustomize import KustomizeError, render


def _normalise(docs: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    out = {}
    for doc in docs:
        doc = dict(doc)
        if doc["kind"] == "Secret" and "data" in doc:  # kubectl wraps base64 lines; compare decoded
            doc["data"] = {k: base64.b64decode("".join(v.split())) for k, v in doc["data"].items()}
        out[(doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])] = doc
    return out


@pytest.mark.parametrize("subdir", ["", "overlays/kind"])
def test_render_matches_kubectl_kustomize(k8s_copy: Path, subdir: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None or subprocess.run([kubectl, "kustomize", "--help"], capture_output=True).returncode != 0:
        pytest.skip("kubectl with kustomize is not installed: the renderer is checked by the other tests only")
    target = k8s_copy / subdir
    out = subprocess.run([kubectl, "kustomize", str(target)], capture_output=True, text=True, check=True).stdout
    theirs = _normalise([d for d in yaml.safe_load_all(out) if d])
    mine = _normalise(render(target))
    assert set(mine) == set(theirs)
    for key in mine:
        assert mine[key] == theirs[key], f"renderer differs from kubectl kustomize on {key}"


def test_missing_resource_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [nope.yaml]\n")
    with pytest.raises(KustomizeError, match=r"nope\.yaml.*does not exist"):
        render(tmp_path)


def test_unsupported_field_is_refused_not_ignored(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("commonLabels: {a: b}\n")
    with pytest.raises(KustomizeError, match="unsupported kustomization fields"):
        render(tmp_path)


def test_kind_overlay_without_generated_secrets_says_which_file(tmp_path: Path, repo: Path) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(repo / "k8s", copy, ignore=shutil.ignore_patterns("secrets"))
    with pytest.raises(KustomizeError, match=r"secrets/postgres\.env"):
        render(copy / "overlays" / "kind")
