"""Dimension `health`: the compose healthcheck and the readiness probe check the same endpoint; a
liveness probe exists on the same server.

Prod readiness *weaker* than the dev healthcheck is a hard finding that no exception can accept: Kubernetes
would send traffic to a pod that dev would call unhealthy. Both sides are reduced to an identity (`http
:PORT/PATH`, `tcp :PORT`, `grpc :PORT`, `exec COMMAND`; a shell command that requests a URL counts as that
HTTP request). With a dev healthcheck, prod readiness is weaker when
- there is no readinessProbe; or
- the readinessProbe is a tcpSocket and the healthcheck is not: an open port says less than a command or a
  request that has to answer; or
- the healthcheck requests a readiness endpoint (an HTTP path whose last segment is readyz, ready or
  readiness: "my dependencies answer") and the readinessProbe requests none (e.g. /healthz: "the process is
  up", or no HTTP request at all).
Any other difference (another path of the same kind, another port, a probe stronger than the healthcheck, no
healthcheck in dev) is ordinary drift, which an exception naming both identities may accept."""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath
from typing import Any

from conformance.loaders.compose import Healthcheck
from conformance.loaders.k8s import Container
from conformance.parity.context import ParityContext
from conformance.parity.findings import Finding, drift, hard_drift, ok

DIM = "health"
_URL = re.compile(r"https?://[^\s'\"/:]+(?::(\d+))?(/[^\s'\"]*)?")
_ASSIGN = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)+")
READINESS_ENDPOINTS = frozenset({"readyz", "ready", "readiness"})


def _shell_identity(command: str) -> str:
    match = _URL.search(command)
    if match:
        return f"http :{match.group(1) or 80}{match.group(2) or '/'}"
    first = re.split(r"\s*(?:\||>|&&|;|\|\|)\s*", command.strip(), maxsplit=1)[0]
    first = _ASSIGN.sub("", first)
    return "exec " + " ".join(first.split())


def dev_identity(hc: Healthcheck | None) -> str | None:
    if hc is None or hc.disabled or not hc.test:
        return None
    kind, *rest = hc.test
    if kind == "CMD-SHELL":
        return _shell_identity(" ".join(rest))
    if kind == "CMD":
        return _shell_identity(shlex.join(rest))
    return _shell_identity(shlex.join(hc.test))


def prod_identity(probe: dict[str, Any] | None, container: Container) -> str | None:
    if not probe:
        return None
    if "httpGet" in probe:
        get = probe["httpGet"]
        return f"http :{container.port_number(get.get('port', 80))}{get.get('path', '/')}"
    if "tcpSocket" in probe:
        return f"tcp :{container.port_number(probe['tcpSocket'].get('port'))}"
    if "grpc" in probe:
        return f"grpc :{probe['grpc'].get('port')}"
    if "exec" in probe:
        cmd = [str(c) for c in probe["exec"].get("command") or []]
        if len(cmd) == 3 and cmd[0] in ("sh", "/bin/sh", "bash", "/bin/bash") and cmd[1] == "-c":
            return _shell_identity(cmd[2])
        return _shell_identity(shlex.join(cmd))
    return None


def _port(identity: str | None) -> str | None:
    if identity and identity.startswith(("http ", "tcp ", "grpc ")):
        return identity.split()[1].split("/")[0]
    return None


def _requests_readiness(identity: str) -> bool:
    if not identity.startswith("http "):
        return False
    path = identity.partition("/")[2].split("?")[0]
    return PurePosixPath("/" + path).name in READINESS_ENDPOINTS


def weaker(dev: str, ready: str | None) -> str | None:
    """Why the readiness probe (identity `ready`) checks less than the healthcheck (`dev`); None if it does not."""
    if ready is None:
        return "no readinessProbe where dev has a healthcheck"
    if ready.startswith("tcp ") and not dev.startswith("tcp "):
        return "the readinessProbe only opens the port where the healthcheck needs an answer"
    if _requests_readiness(dev) and not _requests_readiness(ready):
        return "the healthcheck asks the readiness endpoint, the readinessProbe does not"
    return None


def _readiness(subject: str, dev: str | None, ready: str | None) -> Finding:
    if dev is None:
        return drift(DIM, subject, dev, ready, "no compose healthcheck")
    why = weaker(dev, ready)
    if why is not None:
        return hard_drift(DIM, subject, dev, ready, f"prod readiness is weaker than dev: {why}")
    if dev != ready:
        return drift(DIM, subject, dev, ready, "the healthcheck and the readiness probe check different things")
    return ok(DIM, subject, dev, ready)


def compare(ctx: ParityContext) -> list[Finding]:
    out: list[Finding] = []
    for pair in ctx.in_both:
        assert pair.dev is not None and pair.container is not None
        dev = dev_identity(pair.dev.healthcheck)
        ready = prod_identity(pair.container.probes.get("readiness"), pair.container)
        live = prod_identity(pair.container.probes.get("liveness"), pair.container)
        out.append(_readiness(f"{pair.name}/readiness", dev, ready))
        subject = f"{pair.name}/liveness"
        if live is None:
            out.append(drift(DIM, subject, dev, None, "no livenessProbe"))
        elif _port(dev) and _port(live) and _port(dev) != _port(live):
            out.append(drift(DIM, subject, dev, live, "liveness is probed on another port than the healthcheck"))
        else:
            out.append(
                ok(DIM, subject, dev, live, None if live == dev else "liveness may be lighter than readiness")
            )
    return out
