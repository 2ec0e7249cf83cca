"""Live tests: they talk to the running compose stack (scripts/stack.sh up), never start it themselves.

test_smoke.py and test_tls_front.py are marked `live`: `make live` (pytest -m live) runs them after `make up`, and
without the stack they fail (the air-gapped recipes, which need no Docker, are checked in tests/deploy/). The stack's
ports and credentials come from .env.local (written by scripts/dev_up.sh), or from the file named by
SOMABRAIN_LIVE_ENV_FILE.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from targets.envfile import read_env_file
from tests.live.stack import ROOT, Stack


@pytest.fixture(scope="session")
def stack() -> Stack:
    env_file = Path(os.environ.get("SOMABRAIN_LIVE_ENV_FILE", ROOT / ".env.local"))
    if not env_file.is_file():
        pytest.fail(f"{env_file} does not exist: start the stack with scripts/stack.sh up")
    return Stack(read_env_file(env_file))
