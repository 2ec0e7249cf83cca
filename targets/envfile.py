"""The dev stack's env file (`.env.local`, written by scripts/dev_up.sh) and which compose project a tool means.

One reader, `read_env_file`: python-dotenv's, so quoting, `export` and comments read as compose reads them. One
resolver, `compose_project`, with the precedence every tool and script follows (scripts/stack.sh's `project`
too):

1. the tool's own option (`--compose-project`, `--project`);
2. COMPOSE_PROJECT_NAME in the env file: the project this checkout's `make up` started;
3. COMPOSE_PROJECT_NAME in the environment: what dev_up.sh writes into a new env file, so it names the project
   only until there is one;
4. `somabrain`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

REPO = Path(__file__).resolve().parent.parent
ENV_FILE = REPO / ".env.local"
DEFAULT_PROJECT = "somabrain"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE pairs of a dotenv file; a key without a value reads as "". Raises OSError when it cannot be read
    (python-dotenv itself would return nothing for a missing file)."""
    with path.open(encoding="utf-8") as stream:
        return {key: value or "" for key, value in dotenv_values(stream=stream).items()}


def compose_project(explicit: str | None = None, env_file: Path = ENV_FILE,
                    environ: Mapping[str, str] = os.environ) -> str:
    """The compose project a tool means: see the module docstring for the precedence."""
    if explicit:
        return explicit
    if env_file.is_file():
        name = read_env_file(env_file).get("COMPOSE_PROJECT_NAME")
        if name:
            return name
    return environ.get("COMPOSE_PROJECT_NAME") or DEFAULT_PROJECT
