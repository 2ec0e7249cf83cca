"""Operator tools for a running SomaBrain: `somabrain doctor | migrate | rollout | rotate`.

Each module's `main(argv) -> int` is registered under the `somabrain.commands` entry-point group (pyproject), so
`brain/` never imports this package. Every tool works on an environment through the conformance target layer
(`targets`: compose via docker, Kubernetes via the kubernetes client) and never re-implements it.

The target layer imports its clients lazily, so a plain `pip install somabrain` would load a tool and fail with a
traceback halfway through. Importing this package checks for the `ops` extra instead: `brain.cli` turns the
ImportError into one line naming the install command.
"""

from importlib.util import find_spec

INSTALL_HINT = "pip install 'somabrain[ops]'"
# Modules the tools import (through targets) that the runtime dependencies do not bring.
REQUIRED_MODULES = ("kubernetes", "urllib3")


def missing_modules() -> list[str]:
    return [name for name in REQUIRED_MODULES if find_spec(name) is None]


if missing := missing_modules():
    raise ImportError(f"the operator tools need {', '.join(missing)}: {INSTALL_HINT}", name=missing[0])
