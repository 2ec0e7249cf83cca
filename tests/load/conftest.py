"""Fixtures of the load/ tests: the air-gapped base image the live ones run in (recorded answers: recorded.py)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

BASE_IMAGE = "somabrain-airgap/base:local"  # debootstrap bookworm + python3, built by scripts/airgap_images.sh


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
