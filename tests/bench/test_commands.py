"""The benchmarks run by hand only, so CI checks what their make targets rely on: each module of bench/ runs as
`python -m bench.NAME` from the repository root, imports what it needs, and `--help` describes it without starting
anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("module", "first_line"), [
    ("bench.core", "Service-core benchmark, run by hand (`make bench`), never in CI."),
    ("bench.recall", "Recall benchmark, run by hand (`make bench-recall`), never in CI"),
    ("bench.quota", "Quota benchmark, run by hand (`make bench-quota`), never in CI"),
])
def test_help_runs_from_the_repository_root(module: str, first_line: str) -> None:
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert first_line in done.stdout
