"""`somabrain`: serve the API or SomaMemory through Hypercorn.

    somabrain api    [--bind 0.0.0.0:9696] [--workers 1] [--loop uvloop]
    somabrain memory [--bind 0.0.0.0:9595] [--workers 1] [--loop uvloop]
    somabrain db-init [--wait 60]     the Postgres roles and both apps' migrations (brain.dbinit)

Everything else comes from `SOMABRAIN_*` environment variables (see README). Configuration is checked before any
worker starts: a problem prints one line naming the variable and exits 2. SIGTERM and SIGINT stop gracefully:
in-flight requests finish (up to --graceful-timeout seconds), then the process exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points

from brain import __version__, logs
from brain.errors import ConfigError
from brain.settings import Settings

APPS = {
    "api": ("brain.api.app:create_app()", "0.0.0.0:9696", "the SomaBrain API"),
    "memory": ("brain.somamemory.app:create_app()", "0.0.0.0:9595", "the SomaMemory service"),
}

EXIT_CONFIG = 2
#: Hypercorn worker classes (event loops) the apps may run on. uvloop is the default: measured with `make bench`
#: on one worker, it cut the API's CPU per request by about a fifth on /health and a tenth on /act, against 2 %
#: for the bare Quart baseline; asyncio stays for debugging (its debug mode, or to rule uvloop out).
LOOPS = ("uvloop", "asyncio")
# The extra (pyproject) that holds the operator tools' dependencies.
OPS_INSTALL = "pip install 'somabrain[ops]'"


def _tools() -> dict[str, EntryPoint]:
    """Operator commands other packages register under the `somabrain.commands` entry-point group.

    brain/ stays free of harness code: `somabrain doctor`, `migrate`, `rollout` live in the `ops` package, which
    this CLI finds by entry point and never imports by name.
    """
    return {ep.name: ep for ep in entry_points(group="somabrain.commands") if ep.name not in APPS}


def _run_tool(ep: EntryPoint, argv: Sequence[str]) -> int:
    try:
        command = ep.load()
    except ImportError as exc:
        # Either the tools' package itself is absent (the service image ships brain/ only, while the metadata still
        # registers the tools) or a dependency of theirs is (an install without the extra). One line, no traceback,
        # and the install named once even when the tools' own message already names it.
        package = ep.module.partition(".")[0]
        if exc.name == package:
            why = f"its package `{package}` is not installed; the service image ships only the service"
        else:
            why = str(exc).removesuffix(f": {OPS_INSTALL}")
        print(f"somabrain {ep.name}: not available in this installation ({why}): {OPS_INSTALL}", file=sys.stderr)
        return EXIT_CONFIG
    return int(command(list(argv)))


def _parser(tools: Sequence[str] = ()) -> argparse.ArgumentParser:
    epilog = f"operator tools: {', '.join(sorted(tools))} (somabrain TOOL --help)" if tools else None
    parser = argparse.ArgumentParser(
        prog="somabrain",
        description="SomaBrain cognitive-memory service. Configuration comes from SOMABRAIN_* environment "
        "variables; see the README for the list.",
        epilog=epilog,
    )
    parser.add_argument("--version", action="version", version=f"somabrain {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{api,memory,db-init}")
    for name, (_, bind, what) in APPS.items():
        cmd = sub.add_parser(name, help=f"serve {what}", description=f"Serve {what} with Hypercorn.")
        cmd.add_argument("--bind", default=bind, help=f"HOST:PORT to listen on (default {bind})")
        cmd.add_argument(
            "--workers", type=int, default=1,
            help="worker processes (default 1); >1 shares metrics through PROMETHEUS_MULTIPROC_DIR",
        )
        cmd.add_argument(
            "--loop", choices=LOOPS, default=LOOPS[0],
            help="event loop: uvloop (default, faster) or asyncio (the standard library's, for debugging)",
        )
        cmd.add_argument(
            "--graceful-timeout", type=float, default=10.0,
            help="seconds in-flight requests get to finish on SIGTERM (default 10)",
        )
        cmd.add_argument(
            "--reload", action="store_true",
            help="dev only: restart the app within a second of any change to brain/*.py (one worker)",
        )
        cmd.add_argument("--log-level", default=os.environ.get("SOMABRAIN_LOG_LEVEL", "info"),
                         choices=["debug", "info", "warning", "error"],
                         help="log level (default: $SOMABRAIN_LOG_LEVEL or info)")
        cmd.add_argument("--log-format", default=os.environ.get("SOMABRAIN_LOG_FORMAT", "text"),
                         choices=["text", "json"],
                         help="text for a terminal, json (one object per line) for log aggregation "
                         "(default: $SOMABRAIN_LOG_FORMAT or text)")
    sub.add_parser("db-init", help="create the Postgres roles and apply both apps' migrations (as the superuser)")
    return parser


def _check_bind(bind: str) -> None:
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--bind {bind!r}: expected HOST:PORT, e.g. 0.0.0.0:9696")


def _multiproc_dir(workers: int) -> str | None:
    """With several workers, metrics need a shared, empty directory; reuse the configured one or make one."""
    if workers <= 1:
        return None
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if configured:
        os.makedirs(configured, exist_ok=True)
        for entry in os.listdir(configured):
            if entry.endswith(".db"):
                os.remove(os.path.join(configured, entry))
        return None
    path = tempfile.mkdtemp(prefix="somabrain-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    tools = _tools()
    if argv and argv[0] in tools:
        return _run_tool(tools[argv[0]], argv[1:])
    if argv and argv[0] == "db-init":
        from brain import dbinit

        logs.configure(os.environ.get("SOMABRAIN_LOG_LEVEL", "info"), os.environ.get("SOMABRAIN_LOG_FORMAT", "text"))
        return dbinit.main(argv[1:])
    args = _parser(list(tools)).parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    try:
        _check_bind(args.bind)
        if args.workers < 1:
            raise ConfigError(f"--workers {args.workers}: must be at least 1")
        if args.reload and args.workers != 1:
            raise ConfigError("--reload serves one worker; drop --workers")
        settings = Settings.from_env(app="memory" if args.command == "memory" else "api")
        if settings.metrics_port is not None and str(settings.metrics_port) == args.bind.rpartition(":")[2]:
            raise ConfigError(f"SOMABRAIN_METRICS_PORT={settings.metrics_port} is the --bind port: give /metrics "
                              "a port of its own, or unset it to serve /metrics beside the routes")
        if args.command == "api":
            from brain.api.state import preflight

            preflight(settings)
    except ConfigError as exc:
        print(f"somabrain {args.command}: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    from hypercorn.config import Config
    from hypercorn.run import run

    made = _multiproc_dir(args.workers)
    config = Config()
    config.bind = [args.bind]
    if settings.metrics_port is not None:  # /metrics alone, on a port of its own (brain.web.common)
        config.bind.append(f"{args.bind.rpartition(':')[0]}:{settings.metrics_port}")
    config.application_path = APPS[args.command][0]
    # workers=0 serves in this process (one worker); more spawn processes sharing the socket.
    config.workers = 0 if args.workers == 1 else args.workers
    config.worker_class = args.loop
    config.graceful_timeout = args.graceful_timeout
    # Hypercorn logs through this logger as it is (no handler of its own); every worker applies logconfig_dict.
    config.errorlog = logging.getLogger("hypercorn.error")
    config.accesslog = None
    config.logconfig_dict = logs.dict_config(args.log_level, args.log_format)
    logging.getLogger(__name__).info(
        "serving %s on %s with %d worker(s) on %s", APPS[args.command][2], args.bind, args.workers, args.loop
    )
    try:
        if args.reload:
            from pathlib import Path

            from brain import devreload

            return devreload.serve(config, watch=Path(__file__).resolve().parent)
        return run(config)
    except OSError as exc:
        print(f"somabrain {args.command}: cannot listen on {args.bind}: {exc.strerror}", file=sys.stderr)
        return 1
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
