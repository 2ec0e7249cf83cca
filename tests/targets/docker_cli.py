"""The docker CLI for the live target tests (their `image` fixture, an nginx image of the local store: conftest.py)."""

from __future__ import annotations

import subprocess

IMAGES = ("nginx:1.27-alpine", "somabrain-airgap/nginx:local")


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60, check=False)

