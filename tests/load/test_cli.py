"""`python -m load`: bad input and unreachable environments give a one-line message and exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "load", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_help_lists_the_commands() -> None:
    done = run("--help")
    assert done.returncode == 0
    for word in ("run", "baseline", "profiles", "Exit codes"):
        assert word in done.stdout


def test_profiles() -> None:
    done = run("profiles")
    assert done.returncode == 0
    assert [line.split()[0] for line in done.stdout.splitlines()] == ["smoke", "steady", "step", "spike"]


@pytest.mark.parametrize(("args", "message"), [
    (["run", "--profile", "soak"], "invalid choice"),
    (["run", "--users", "0"], "expected a positive integer"),
    (["run", "--duration", "-3"], "expected a positive number"),
    (["run", "--weights", "admin=3"], "expected reader|writer|actor|health"),
    (["run", "--env-file", "/nonexistent/.env.local"], "cannot be read"),
    (["run", "--endpoint", "http://127.0.0.1:1", "--env-file", "/dev/null"], "does not answer"),
    (["run", "--set", "resources.memory_max=lots", "--env-file", "/dev/null"], "non-negative number"),
    (["run", "--jwt-private-key", "/nonexistent.pem", "--env-file", "/dev/null"], "cannot read"),
    (["run", "--think", "slow", "--env-file", "/dev/null"], "expected MIN,MAX"),
    (["baseline", "--env", "prod", "--endpoint", "http://127.0.0.1:1"], "--env dev"),
])
def test_bad_input_exits_2_with_a_message(args: list[str], message: str) -> None:
    done = run(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
