"""Fixtures of the parity gate's tests: `tree`, a private copy of the deployment tree (helpers: gate.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.gate import copy_tree


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return copy_tree(tmp_path / "repo")
