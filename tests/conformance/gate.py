"""What the parity gate's tests share: a private copy of the deployment tree, YAML editing, the drifts they
introduce (Mutation) and the gate run in-process (run_gate, GateResult). The `tree` fixture is in conftest.py."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.__main__ import main

REPO = Path(__file__).resolve().parents[2]
EXCEPTIONS = REPO / "conformance" / "parity-exceptions.yaml"


@dataclass
class GateResult:
    code: int
    findings: list[dict[str, Any]]
    stderr: str

    def drifts(self) -> list[tuple[str, str]]:
        return [(f["dimension"], f["subject"]) for f in self.findings if f["status"] == "drift"]

    def stale(self) -> list[tuple[str, str]]:
        return [(f["dimension"], f["subject"]) for f in self.findings if f["status"] == "stale"]

    def by_subject(self, dimension: str, subject: str) -> dict[str, Any]:
        """The comparators' finding for a subject (an exception reported stale for it is not one of theirs)."""
        hits = [
            f
            for f in self.findings
            if f["dimension"] == dimension and f["subject"] == subject and f["status"] != "stale"
        ]
        assert len(hits) == 1, f"expected one {dimension} finding for {subject}, got {hits}"
        return hits[0]


@dataclass(frozen=True)
class Mutation:
    """One drift introduced into a copied tree, and the finding the gate must report for it."""

    id: str
    dimension: str
    subject: str
    apply: Callable[[Path], None]
    hard: bool = False


def copy_tree(dest: Path) -> Path:
    """compose/, k8s/ (without leftovers of the kind secrets older dev_up.sh wrote), the Dockerfile, pyproject.toml."""
    for name in ("compose", "k8s"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("secrets", "__pycache__"))
    for name in ("Dockerfile", "pyproject.toml"):
        shutil.copy2(REPO / name, dest / name)
    return dest


def run_gate(
    tree: Path, capsys: pytest.CaptureFixture[str], *extra: str, exceptions: Path | None = EXCEPTIONS
) -> GateResult:
    out = tree / "report.json"
    args = [
        "parity",
        "--compose",
        str(tree / "compose" / "docker-compose.yml"),
        "--k8s",
        str(tree / "k8s"),
        "--format",
        "json",
        "--out",
        str(out),
        *extra,
    ]
    if exceptions is None:
        args.append("--no-exceptions")
    else:
        args += ["--exceptions", str(exceptions)]
    code = main(args)
    captured = capsys.readouterr()
    findings = json.loads(out.read_text()) if out.exists() else []
    return GateResult(code, findings, captured.err)


def edit_yaml(path: Path, change: Callable[[Any], Any]) -> None:
    """Apply `change` to the one YAML document in `path` (it edits in place or returns a new one)."""
    doc = yaml.safe_load(path.read_text())
    new = change(doc)
    path.write_text(yaml.safe_dump(doc if new is None else new, sort_keys=False))


def edit_k8s(path: Path, kind: str, name: str, change: Callable[[dict[str, Any]], Any]) -> None:
    """Apply `change` to the object kind/name in a multi-document manifest file."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"{path}: no single {kind}/{name}"
    change(hits[0])
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def compose_service(tree: Path, service: str, change: Callable[[dict[str, Any]], Any]) -> None:
    def apply(doc: dict[str, Any]) -> None:
        change(doc["services"][service])

    edit_yaml(tree / "compose" / "docker-compose.yml", apply)


def container(obj: dict[str, Any], index: int = 0) -> dict[str, Any]:
    result: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][index]
    return result
