"""`somabrain api --reload`: a saved change is served by a fresh worker; a broken save waits for the fix.

The test runs the reloader on a private copy of the brain package (PYTHONPATH), so it edits the copy, never the
checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from localservers.servers import ROOT, free_port, wait_for


def _build(url: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:  # noqa: S310 (127.0.0.1)
            return str(json.load(response)["build"])
    except OSError:
        return None


def _save(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.mark.slow
def test_saved_change_is_served_and_a_syntax_error_waits(strict_env: dict[str, str], tmp_path: Path) -> None:
    shutil.copytree(ROOT / "brain", tmp_path / "brain", ignore=shutil.ignore_patterns("__pycache__"))
    build_file = tmp_path / "brain" / "build.py"
    original = build_file.read_text()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **strict_env, "PYTHONPATH": str(tmp_path), "SOMABRAIN_LOG_LEVEL": "info"}
    log = open(tmp_path / "reload.log", "wb")  # the child's log for the whole test
    proc = subprocess.Popen([sys.executable, "-m", "brain.cli", "api", "--reload", "--bind", f"127.0.0.1:{port}"],
                            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _build(url) == "dev", lambda: (tmp_path / "reload.log").read_text(), timeout=60)
        # The worker the reloader forks runs on the event loop `--loop` chose (its default, uvloop).
        assert "api serving on the event loop uvloop.Loop" in (tmp_path / "reload.log").read_text()
        _save(build_file, original.replace('BUILD = "dev"', 'BUILD = "second"'))
        wait_for(lambda: _build(url) == "second", "the edited code to serve", timeout=60)
        _save(build_file, original.replace('BUILD = "dev"', "BUILD = (  # a syntax error"))
        wait_for(lambda: _build(url) is None, "the broken worker to stop serving", timeout=60)
        assert proc.poll() is None  # the reloader itself survives a broken save
        _save(build_file, original.replace('BUILD = "dev"', 'BUILD = "fixed"'))
        wait_for(lambda: _build(url) == "fixed", "the fixed code to serve", timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        log.close()
