#!/opt/opa-standin/bin/python
"""`opa` command line of the air-gapped OPA stand-in.

Accepts the official image's invocations and maps them onto opa_standin.py:

  /opa run --server [--addr HOST:PORT] [other opa run flags] FILE...   -> opa_standin.py --addr HOST:PORT FILE...
  /opa version                                                        -> names the stand-in, exit 0

Flags of `opa run` that the stand-in has no use for (log level, watch, bundle, ...) are accepted and
ignored, with a note on stderr. Anything else exits 2 with a message.
"""

from __future__ import annotations

import os
import sys

STANDIN = "/opt/opa-standin/opa_standin.py"
DEFAULT_ADDR = "0.0.0.0:8181"  # the official `opa run --server` default is :8181 on all interfaces
# `opa run` flags that take no value; every other flag takes one (as `--flag value` or `--flag=value`).
BOOLEAN_FLAGS = {
    "--server", "-s", "--watch", "-w", "--bundle", "-b", "--skip-version-check", "--h2c",
    "--skip-verify", "--disable-telemetry", "--optimize-store-for-read-speed", "--exclude-files-verify",
}


def translate_run(args: list[str]) -> list[str]:
    addr = DEFAULT_ADDR
    files: list[str] = []
    ignored: list[str] = []
    server = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--server", "-s"):
            server = True
        elif arg in ("--addr", "-a"):
            if i + 1 >= len(args):
                raise SystemExit("opa (stand-in): --addr needs a value")
            addr = args[i + 1]
            i += 1
        elif arg.startswith("--addr="):
            addr = arg.split("=", 1)[1]
        elif arg in BOOLEAN_FLAGS or (arg.startswith("--") and "=" in arg):
            ignored.append(arg)
        elif arg.startswith("-"):
            ignored.append(" ".join(args[i : i + 2]))
            i += 1
        else:
            # OPA allows "prefix:path"; the stand-in loads the file itself.
            files.append(arg.split(":", 1)[1] if ":" in arg and not os.path.exists(arg) else arg)
        i += 1
    if not server:
        raise SystemExit("opa (stand-in): only `opa run --server` is supported (no interactive REPL)")
    if addr.startswith(":"):
        addr = "0.0.0.0" + addr
    if ignored:
        print(f"opa (stand-in): ignoring flags: {', '.join(ignored)}", file=sys.stderr)
    return [sys.executable, STANDIN, "--addr", addr, *files]


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    if argv[0] == "version":
        print("Version: 0.48.0-compatible STAND-IN (opa_standin.py on the regorus Rego engine), not OPA")
        return 0
    if argv[0] == "run":
        command = translate_run(argv[1:])
        os.execv(command[0], command)  # noqa: S606 - replaces this shim by the stand-in server
    print(f"opa (stand-in): unsupported command {argv[0]!r}; supported: run --server, version", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
