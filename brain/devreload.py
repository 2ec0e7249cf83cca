"""`somabrain api --reload`: a fast code reloader for the dev loop (compose dev override, Tilt, `make dev`).

Hypercorn's own reloader starts a fresh interpreter on every change, which pays JAX's import (about 1.3 s) each
time. This one keeps a parent process that imports the heavy third-party libraries once, binds the listening
socket once, and forks a worker per code version: the worker imports `brain` fresh and serves on the inherited
socket. A change under the watched directory (polled every 0.1 s) makes the parent stop the worker gracefully and
fork the next one. JAX is only imported in the parent, never used there, so forking is safe: each worker starts
its own XLA backend. Dev only: production runs without --reload.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

#: Imported once in the parent so that each worker starts in a fraction of a second.
PRELOAD = ("numpy", "jax", "jax.numpy", "quart", "hypercorn.asyncio", "uvloop", "redis.asyncio", "asyncpg", "httpx",
           "pydantic", "prometheus_client", "aiokafka", "joserfc.jwt", "cryptography.x509")
POLL_S = 0.1


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*.py")}


def _run_worker(config: object, sockets: object) -> None:
    """In the forked child: forget every brain module (and its metrics), then serve the freshly imported app."""
    from prometheus_client import REGISTRY
    from prometheus_client.metrics import MetricWrapperBase

    for name in [n for n in sys.modules if n == "brain" or n.startswith("brain.")]:
        # The parent imported some brain modules (the CLI's preflight); their metrics would clash with the fresh
        # import's in the process-wide registry.
        for value in list(vars(sys.modules[name]).values()):
            if isinstance(value, MetricWrapperBase):
                REGISTRY.unregister(value)
        del sys.modules[name]
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    from hypercorn.asyncio.run import asyncio_worker, uvloop_worker

    # The worker class `somabrain --loop` chose; each installs its own SIGTERM/SIGINT handlers.
    worker = uvloop_worker if getattr(config, "worker_class", "asyncio") == "uvloop" else asyncio_worker
    worker(config, sockets)  # type: ignore[arg-type]
    os._exit(0)


def serve(config: object, watch: Path, graceful_s: float = 2.0) -> int:
    """Serve `config.application_path` and restart it whenever a .py file under `watch` changes."""
    for module in PRELOAD:
        importlib.import_module(module)
    sockets = config.create_sockets()  # type: ignore[attr-defined]
    stopping = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    seen = _snapshot(watch)
    while not stopping:
        pid = os.fork()
        if pid == 0:
            _run_worker(config, sockets)
        log.info("reloader: worker %d serving the code under %s", pid, watch)
        changed = False
        while not stopping and not changed:
            time.sleep(POLL_S)
            if os.waitpid(pid, os.WNOHANG) != (0, 0):  # the worker died (e.g. a syntax error): wait for a fix
                log.warning("reloader: worker %d exited; waiting for a code change", pid)
                while not stopping and _snapshot(watch) == seen:
                    time.sleep(POLL_S)
                seen = _snapshot(watch)
                pid = 0
                break
            now = _snapshot(watch)
            changed = now != seen
            while changed and (settled := _snapshot(watch)) != now:  # an editor may still be writing: settle
                now = settled
                time.sleep(POLL_S / 2)
            seen = now
        if pid:
            _stop_worker(pid, graceful_s)
        if changed:
            log.info("reloader: code changed, restarting")
    return 0


def _stop_worker(pid: int, graceful_s: float) -> None:
    """SIGTERM (in-flight requests finish), then SIGKILL after `graceful_s`."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + graceful_s
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
