"""Shared fixtures for the static deployment checks: the repository root and rendered manifests."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conformance.loaders.kustomize import render

REPO = Path(__file__).resolve().parents[2]
Resource = dict[str, Any]


def write_kind_secrets(k8s_copy: Path) -> None:
    """The kind overlay's gitignored secret files, as `scripts/dev_up.sh --kind-secrets` writes them."""
    secrets = k8s_copy / "overlays" / "kind" / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    (secrets / "postgres.env").write_text(
        "POSTGRES_USER=somabrain\nPOSTGRES_PASSWORD=test-only\nPOSTGRES_DB=somabrain\n"
    )
    (secrets / "jwt_pub.pem").write_text("-----BEGIN PUBLIC KEY-----\ntest-only\n-----END PUBLIC KEY-----\n")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def k8s_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of k8s/ with the kind overlay's generated secret files in place (never the user's own)."""
    dest = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(REPO / "k8s", dest, ignore=shutil.ignore_patterns("secrets"))
    write_kind_secrets(dest)
    return dest


@pytest.fixture(scope="session")
def base_manifests(k8s_copy: Path) -> list[Resource]:
    return render(k8s_copy)


@pytest.fixture(scope="session")
def kind_manifests(k8s_copy: Path) -> list[Resource]:
    return render(k8s_copy / "overlays" / "kind")


def find(resources: list[Resource], kind: str, name: str) -> Resource:
    matches = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected exactly one {kind}/{name}, found {len(matches)}"
    return matches[0]


def tool(name: str, *candidates: Path) -> str | None:
    """Path of an executable: the project's .venv first, then PATH."""
    for path in candidates:
        if path.is_file():
            return str(path)
    return shutil.which(name)


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a script under test; by default in this environment minus what would change its defaults."""
    kwargs.setdefault("env", {k: v for k, v in os.environ.items() if k != "COMPOSE_PROJECT_NAME"})
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, **kwargs)


Finder = Callable[[list[Resource], str, str], Resource]
