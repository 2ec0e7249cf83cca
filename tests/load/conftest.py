"""Shared helpers for the load/ tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
BASE_IMAGE = "somabrain-airgap/base:local"  # debootstrap bookworm + python3, built by scripts/airgap_images.sh


def fixture_json(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def docker_image_available(image: str) -> bool:
    if shutil.which("docker") is None:
        return False
    done = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False, timeout=30)
    return done.returncode == 0


@pytest.fixture(scope="session")
def base_image() -> str:
    """For `live` tests only (they run after `make up`, which builds the image): missing, it is a failure."""
    if not docker_image_available(BASE_IMAGE):
        pytest.fail(f"needs Docker and the image {BASE_IMAGE} (scripts/stack.sh up builds it)")
    return BASE_IMAGE
