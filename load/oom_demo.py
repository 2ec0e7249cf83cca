"""The limit check can fail: a separate compose project whose somabrain has a memory limit below its working set
under load (load/oom/docker-compose.oom.yml), loaded until the verdict reports OOM kills / the memory breach
and `python -m load run` exits 1. Then that project, and only that project, is taken down with its volumes.

    python -m load.oom_demo [--keep]       # about 3 minutes; `make load-oom`
    SOMABRAIN_LIVE_OOM=1 pytest -m live tests/load/test_oom_demo.py

It never touches the shared `somabrain` project: its own project name (sbload-oom), its own free host ports on
127.0.0.1 (a copy of .env.local with the ports replaced), its own volumes.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from targets.envfile import ENV_FILE, read_env_file

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "sbload-oom"
OVERRIDE = Path(__file__).parent / "oom" / "docker-compose.oom.yml"
PORT_VARIABLES = ("SOMABRAIN_HOST_PORT", "SOMAMEMORY_HOST_PORT", "REDIS_HOST_PORT", "KAFKA_HOST_PORT",
                  "PROMETHEUS_HOST_PORT", "POSTGRES_HOST_PORT", "OPA_HOST_PORT")
LOAD_ARGS = ["--profile", "spike", "--users", "24", "--duration", "60", "--think", "0.1,0.5"]


def compose_command() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise SystemExit("oom_demo: needs docker compose (v2) or docker-compose (v1)")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def env_line(key: str, value: str) -> str:
    """KEY=VALUE as compose and python-dotenv both read it back: bare when nothing in it needs quoting (what
    scripts/dev_up.sh writes), else single-quoted (literal in both), else double-quoted with \\ and \" escaped."""
    if re.fullmatch(r"[A-Za-z0-9_./:@,+=%-]*", value):
        return f"{key}={value}"
    if "'" not in value:
        return f"{key}='{value}'"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{key}="{escaped}"'


def write_env_file(source: Path, target: Path) -> dict[str, str]:
    """A copy of the stack's env file (same credentials) with this project's name and free host ports. The
    source is read by the one dotenv reader (targets.envfile), so `export`, quotes and comments read as compose
    reads them."""
    ports = dict(zip(PORT_VARIABLES, (str(p) for p in free_ports(len(PORT_VARIABLES))), strict=True))
    values = {k: v for k, v in read_env_file(source).items() if k not in (*PORT_VARIABLES, "COMPOSE_PROJECT_NAME")}
    values |= {"COMPOSE_PROJECT_NAME": PROJECT, **ports}
    target.write_text("".join(env_line(k, v) + "\n" for k, v in values.items()))
    return ports


def compose(env_file: Path, *args: str) -> list[str]:
    files = ["-f", str(ROOT / "compose" / "docker-compose.yml")]
    airgap = ROOT / "compose" / "docker-compose.airgap.yml"
    if subprocess.run(["docker", "image", "inspect", "somabrain-airgap/somabrain:local"], capture_output=True,
                      check=False).returncode == 0:
        files += ["-f", str(airgap)]
    return [*compose_command(), "-p", PROJECT, "--env-file", str(env_file), *files, "-f", str(OVERRIDE), *args]


def wait_ready(url: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=3) as response:  # noqa: S310 - our own project
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    raise RuntimeError(f"{PROJECT}: somabrain at {url} was not ready within {timeout:.0f} s")


def demo(report_dir: Path, keep: bool = False) -> tuple[int, dict[str, Any], str]:
    """Run the demonstration; return (exit code of `python -m load run`, verdict, its printed output)."""
    source = ENV_FILE
    if not source.exists():
        raise SystemExit("oom_demo: needs .env.local (the images and credentials of the stack): make up")
    report_dir.mkdir(parents=True, exist_ok=True)
    env_file = report_dir / "sbload-oom.env"
    ports = write_env_file(source, env_file)
    url = f"http://127.0.0.1:{ports['SOMABRAIN_HOST_PORT']}"
    try:
        print(f"==> {PROJECT}: compose up with somabrain's memory limit from {OVERRIDE.name}", flush=True)
        subprocess.run(compose(env_file, "up", "-d"), check=True, timeout=600)
        wait_ready(url)
        print(f"==> {PROJECT}: python -m load run --env dev {' '.join(LOAD_ARGS)}", flush=True)
        done = subprocess.run([sys.executable, "-m", "load", "run", "--env", "dev", "--env-file", str(env_file),
                               *LOAD_ARGS, "--report-dir", str(report_dir / "load")],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        print(done.stdout, done.stderr, sep="", flush=True)
        verdict = json.loads((report_dir / "load" / "verdict.json").read_text()) if done.returncode in (0, 1) else {}
        return done.returncode, verdict, done.stdout
    finally:
        if not keep:
            print(f"==> {PROJECT}: compose down -v (this project only)", flush=True)
            subprocess.run(compose(env_file, "down", "-v", "--remove-orphans"), check=False, timeout=300)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report-dir", type=Path, default=ROOT / "reports" / "load-oom-demo")
    parser.add_argument("--keep", action="store_true", help=f"leave the {PROJECT} project running")
    args = parser.parse_args()
    code, verdict, _ = demo(args.report_dir, keep=args.keep)
    brain = verdict.get("workloads", {}).get("somabrain", {})
    caught = code == 1 and bool(brain.get("breaches"))
    print(f"\nDEMONSTRATION {'OK' if caught else 'FAILED'}: `python -m load run` exited {code}; somabrain: "
          f"{brain.get('oom_kills')} OOM kill(s), {brain.get('restarts')} restart(s), memory peak "
          f"{(brain.get('memory_peak_share') or 0):.0%} of its limit")
    return 0 if caught else 1


if __name__ == "__main__":
    raise SystemExit(main())
