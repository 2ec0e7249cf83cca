"""Run a command (not only a probe) inside a workload, with optional stdin, through the target layer.

The conformance targets find the container (compose) or pod (Kubernetes) and run probes; data migration and
rotation also need to stream bytes in and out of a workload (psql COPY, journal files). This module adds exactly
that on top of the target's own discovery (`ComposeTarget.container`, `KubeTarget.pods`): `docker exec -i` for
compose, the pod `exec` websocket (stdin channel 0) for Kubernetes.

Commands that read stdin must know where their input ends by themselves (psql stops at `\\q`; the journal writer
reads a length-prefixed payload), because the v4 exec protocol cannot close stdin.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from conformance.targets.base import ProbeError, Target
from conformance.targets.compose import ComposeTarget
from conformance.targets.kube import KubeTarget, exit_code

CHUNK = 64 * 1024


@dataclass(frozen=True)
class ExecResult:
    code: int
    stdout: bytes  # empty when streamed to a sink
    stderr: str
    where: str

    def check(self, what: str) -> ExecResult:
        if self.code != 0:
            raise ProbeError(f"{what} in {self.where} exited {self.code}: {self.stderr.strip()[-600:]}")
        return self


def exec_in(target: Target, workload: str, argv: Sequence[str], stdin: bytes | None = None,
            sink: IO[bytes] | None = None, timeout: float = 600.0) -> ExecResult:
    """Run `argv` in `workload`; stdout goes to `sink` when given (streamed), else into the result."""
    if isinstance(target, ComposeTarget):
        return _compose_exec(target, workload, argv, stdin, sink, timeout)
    if isinstance(target, KubeTarget):
        return _kube_exec(target, workload, argv, stdin, sink, timeout)
    raise ProbeError(f"no exec for target {type(target).__name__}")


def _compose_exec(target: ComposeTarget, workload: str, argv: Sequence[str], stdin: bytes | None,
                  sink: IO[bytes] | None, timeout: float) -> ExecResult:
    doc = target.container(workload)
    name = doc["Name"].lstrip("/")
    cmd = [target.docker, "exec", *(["-i"] if stdin is not None else []), doc["Id"], *argv]
    try:
        proc = subprocess.run(cmd, input=stdin, stdout=sink if sink is not None else subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ProbeError(f"container {name}: {argv[0]} did not finish within {timeout:.0f} s") from exc
    out = proc.stdout if sink is None else b""
    return ExecResult(proc.returncode, out or b"", proc.stderr.decode("utf-8", "replace"), f"container {name}")


def _kube_exec(target: KubeTarget, workload: str, argv: Sequence[str], stdin: bytes | None,
               sink: IO[bytes] | None, timeout: float) -> ExecResult:
    pod, container = target.serving_pod(workload)
    with target.exec_core() as core:
        return _stream_exec(core, target.namespace, pod, container, argv, stdin, sink, timeout)


def _stream_exec(core: Any, namespace: str, pod: str, container: str, argv: Sequence[str], stdin: bytes | None,
                 sink: IO[bytes] | None, timeout: float) -> ExecResult:
    from kubernetes.stream import stream

    ws = stream(core.connect_get_namespaced_pod_exec, pod, namespace,
                command=list(argv), container=container, stderr=True, stdin=stdin is not None, stdout=True,
                tty=False, _preload_content=False, binary=True)
    out: list[bytes] = []
    err: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        if stdin is not None:
            for start in range(0, len(stdin), CHUNK):
                ws.write_stdin(stdin[start:start + CHUNK])
            ws.close_channel(0)  # v5 only; a no-op on v4, where the command ends its input itself
        while ws.is_open():
            if time.monotonic() > deadline:
                raise ProbeError(f"pod {pod}: {argv[0]} did not finish within {timeout:.0f} s")
            ws.update(timeout=1)
            _drain(ws, out, err, sink)
        _drain(ws, out, err, sink)
        try:
            code = exit_code(ws)
        except ProbeError as exc:
            raise ProbeError(f"pod {pod} ({container}): {argv[0]}: {exc}") from exc
    finally:
        ws.close()
    return ExecResult(int(code or 0), b"".join(out), b"".join(err).decode("utf-8", "replace"), f"pod {pod}")


def _drain(ws: Any, out: list[bytes], err: list[bytes], sink: IO[bytes] | None) -> None:
    data = ws.read_stdout(timeout=0)
    if data:
        if sink is not None:
            sink.write(data)
        else:
            out.append(data)
    error = ws.read_stderr(timeout=0)
    if error:
        err.append(error)
