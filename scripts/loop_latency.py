#!/usr/bin/env python3
"""Measure the dev loop: from saving a change under brain/ to the new code answering.

Each round writes a new value into brain/build.py (the build id `/healthz` reports), stamps the time the write is
on disk, then polls GET /healthz until it reports that value. After N rounds the file is restored and p50/p95 are
printed. Run it against a server started with reload: `somabrain api --reload` (make dev), or the compose dev
override (`DEV=1 make up`), whose container sees brain/ through a bind mount.

    scripts/loop_latency.py [--url http://127.0.0.1:9696] [-n 10] [--timeout 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

BUILD_FILE = Path(__file__).resolve().parents[1] / "brain" / "build.py"


def serving_build(url: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=1) as response:  # noqa: S310 (127.0.0.1 by default)
            return str(json.load(response).get("build"))
    except (urllib.error.URLError, OSError, ValueError):
        return None


def write_build(original: str, value: str) -> None:
    """Save the way editors do: a complete new file renamed into place (never a half-written one)."""
    text = original.replace('BUILD = "dev"', f'BUILD = "{value}"')
    tmp = BUILD_FILE.with_suffix(".py.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, BUILD_FILE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:9696", help="the API's base URL")
    parser.add_argument("-n", type=int, default=10, help="rounds (default 10)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one round (default 30)")
    args = parser.parse_args()
    original = BUILD_FILE.read_text()
    if 'BUILD = "dev"' not in original:
        print(f"loop_latency: {BUILD_FILE} does not hold BUILD = \"dev\"; restore it first", file=sys.stderr)
        return 2
    if serving_build(args.url) is None:
        print(f"loop_latency: nothing answers {args.url}/healthz; start the API with --reload first", file=sys.stderr)
        return 2
    samples: list[float] = []
    try:
        for i in range(args.n):
            marker = f"loop-{uuid.uuid4().hex[:8]}"
            write_build(original, marker)
            saved = time.monotonic()
            while serving_build(args.url) != marker:
                if time.monotonic() - saved > args.timeout:
                    print(f"loop_latency: round {i + 1}: new code not serving after {args.timeout:g}s", file=sys.stderr)
                    return 1
                time.sleep(0.01)
            samples.append(time.monotonic() - saved)
            print(f"round {i + 1}/{args.n}: {samples[-1]:.3f}s", flush=True)
    finally:
        BUILD_FILE.write_text(original)
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    print(f"save -> serving over {len(samples)} rounds: p50 {statistics.median(samples):.3f}s  p95 {p95:.3f}s  "
          f"max {ordered[-1]:.3f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
