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
from tests.deploy.conftest import checkout_files, fresh_checkout_copy


def _normalise(docs: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, Any]]:
    out = {}
    for doc in docs:
        doc = dict(doc)
        if doc["kind"] == "Secret" and "data" in doc:  # kubectl wraps base64 lines; compare decoded
            doc["data"] = {k: base64.b64decode("".join(v.split())) for k, v in doc["data"].items()}
        out[(doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])] = doc
    return out


@pytest.mark.parametrize("subdir", ["", "overlays/kind", "overlays/monitoring"])
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


@pytest.mark.parametrize("subdir", ["", "overlays/kind", "overlays/monitoring"])
def test_every_entry_point_renders_from_a_fresh_checkout(tmp_path: Path, subdir: str) -> None:
    """Only what git tracks (or would track): no file that a script generates is needed to render."""
    if checkout_files("k8s") is None:
        pytest.skip("not a git checkout: k8s_copy is a plain copy")
    k8s = fresh_checkout_copy("k8s", tmp_path)
    assert not (k8s / "overlays" / "kind" / "secrets").exists()
    assert render(k8s / subdir)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{a: b}}\n"
COMPONENT = "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"


def test_a_component_adds_to_and_patches_what_includes_it(tmp_path: Path) -> None:
    _write(tmp_path / "app" / "cm.yaml", CM.format(name="app"))
    _write(tmp_path / "app" / "kustomization.yaml", "namespace: ns\nresources: [cm.yaml]\ncomponents: [../extra]\n")
    _write(tmp_path / "extra" / "cm.yaml", CM.format(name="extra"))
    _write(
        tmp_path / "extra" / "kustomization.yaml",
        COMPONENT + "resources: [cm.yaml]\npatches:\n  - target: {kind: ConfigMap, name: app}\n"
        "    patch: '[{op: add, path: /data/c, value: d}]'\n",
    )
    out = {r["metadata"]["name"]: r for r in render(tmp_path / "app")}
    assert set(out) == {"app", "extra"}
    assert out["app"]["data"] == {"a": "b", "c": "d"}  # the component's patch reached the includer's object
    assert {r["metadata"]["namespace"] for r in out.values()} == {"ns"}  # the includer's namespace covers it


@pytest.mark.parametrize(
    ("kustomization", "component", "message"),
    [
        ("resources: [../extra]\n", COMPONENT, r"is a Component, but is listed under resources:"),
        ("components: [../extra]\n", "resources: []\n", r"is a Kustomization, but is listed under components:"),
        (
            "components: [../extra]\n",
            COMPONENT.replace("v1alpha1", "v1beta1"),
            r"apiVersion of a Component must be kustomize\.config\.k8s\.io/v1alpha1",
        ),
        ("components: [../nope]\n", COMPONENT, r"component '\.\./nope' is not a directory"),
    ],
)
def test_component_mix_ups_are_refused_as_kustomize_does(
    tmp_path: Path, kustomization: str, component: str, message: str
) -> None:
    _write(tmp_path / "app" / "kustomization.yaml", kustomization)
    _write(tmp_path / "extra" / "kustomization.yaml", component + "resources: []\n" if "resources" not in component
           else component)
    with pytest.raises(KustomizeError, match=message):
        render(tmp_path / "app")
