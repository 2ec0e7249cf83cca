"""Shared fixtures for the static deployment checks: the repository root and rendered manifests (helpers: repo.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.loaders.kustomize import render
from tests.deploy.repo import REPO, Resource, fresh_checkout_copy


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def k8s_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """k8s/ as a fresh clone has it: no gitignored or generated file is needed to render any of it."""
    return fresh_checkout_copy("k8s", tmp_path_factory.mktemp("checkout"))


@pytest.fixture(scope="session")
def base_manifests(k8s_copy: Path) -> list[Resource]:
    return render(k8s_copy).resources


@pytest.fixture(scope="session")
def kind_manifests(k8s_copy: Path) -> list[Resource]:
    return render(k8s_copy / "overlays" / "kind").resources


@pytest.fixture(scope="session")
def monitoring_manifests(k8s_copy: Path) -> list[Resource]:
    """Production with the opt-in ServiceMonitor component (k8s/overlays/monitoring)."""
    return render(k8s_copy / "overlays" / "monitoring").resources
