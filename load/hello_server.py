"""Serve load/hello_app.py the way `somabrain api` serves the API: Hypercorn, one in-process worker, no access log.

    python -m load.hello_server [--bind 0.0.0.0:8000] [--loop uvloop]

Imports only hypercorn (never brain): `python -m load baseline` runs it inside the somabrain image.
"""

from __future__ import annotations

import argparse

from hypercorn.config import Config
from hypercorn.run import run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bind", default="0.0.0.0:8000")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="event loop (Hypercorn worker class); default uvloop, as `somabrain api` serves")
    args = parser.parse_args()
    config = Config()  # the settings brain/cli.py sets, nothing else
    config.bind = [args.bind]
    config.application_path = "load.hello_app:app"
    config.workers = 0
    config.worker_class = args.loop
    config.graceful_timeout = 10
    config.loglevel = "WARNING"
    config.errorlog = "-"
    config.accesslog = None
    return int(run(config) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
