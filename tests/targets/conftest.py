"""Fixtures of the live target tests: an nginx image from the local store to run labelled containers from (`make
up` leaves one of them there)."""

from __future__ import annotations

import pytest

from tests.targets.docker_cli import IMAGES, docker


@pytest.fixture
def image() -> str:
    for name in IMAGES:
        if docker("image", "inspect", name).returncode == 0:
            return name
    pytest.fail(f"none of {IMAGES} exists locally: run scripts/airgap_images.sh --only nginx")
