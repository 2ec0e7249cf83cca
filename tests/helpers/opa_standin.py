"""Run compose/airgap/opa/opa_standin.py (the regorus-based OPA Data API stand-in) as a real subprocess.

opa = OpaStandin([POLICY_FILE], log_dir=tmp_path)
opa.start()                 # binds 127.0.0.1:<free port>, waits for its start-up line
opa.url                     # "http://127.0.0.1:PORT"  -> SOMABRAIN_OPA_URL
opa.data_requests()         # how many /v1/data requests it has answered (from its access log)
opa.kill() / opa.stop()     # SIGKILL / SIGTERM (fault tests); opa.start() again reuses the same port
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "compose" / "airgap" / "opa" / "opa_standin.py"
POLICY_FILE = ROOT / "k8s" / "policy" / "somabrain.rego"
_LISTENING = re.compile(rb"listening on http://127\.0\.0\.1:(\d+)")
_DATA_REQUEST = re.compile(rb'"(?:GET|POST) /v1/data[/ ?]')


class OpaStandin:
    def __init__(
        self,
        files: Sequence[Path | str] = (POLICY_FILE,),
        *,
        log_dir: Path,
        port: int = 0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.files = [str(f) for f in files]
        self.extra_args = list(extra_args)
        self.port = port
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._starts = 0

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the stand-in has not been started")
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        """Start and wait for the start-up line; the first start picks a free port, restarts reuse it."""
        self._starts += 1
        self.log_path = self.log_dir / f"opa-standin-{os.getpid()}-{id(self)}-{self._starts}.log"
        argv = [sys.executable, str(STANDIN), "--addr", f"127.0.0.1:{self.port}", *self.extra_args, *self.files]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log_path.read_bytes())
            if match:
                self.port = int(match.group(1))
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"opa_standin exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.02)
        self.kill()
        raise TimeoutError(f"opa_standin did not announce its port within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def data_requests(self) -> int:
        """Number of /v1/data requests answered since the last start (one access-log line each)."""
        return len(_DATA_REQUEST.findall(self.log_path.read_bytes())) if self.log_path else 0

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self, timeout: float = 10.0) -> int:
        return self._signal(signal.SIGKILL, timeout)

    def _signal(self, sig: signal.Signals, timeout: float) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def __enter__(self) -> OpaStandin:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
