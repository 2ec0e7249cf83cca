"""Liveness and readiness routes both apps expose for Kubernetes probes and compose healthchecks."""

from __future__ import annotations

from collections.abc import Callable

from quart import Response

from brain import build
from brain.web.router import Request, Router
from brain.web.schemas import LiveResponse, ReadyResponse


def add_probe_routes(router: Router, failing: Callable[[], list[str]]) -> None:
    """`/healthz` is 200 while the process serves; `/readyz` is 200 only when `failing()` is empty, else 503."""

    @router.route("GET", "/healthz", summary="Liveness: the process is up", response=LiveResponse, tags=("ops",))
    async def healthz(_: Request) -> LiveResponse:
        return LiveResponse(ok=True, build=build.BUILD)

    @router.route(
        "GET", "/readyz", summary="Readiness: 200 when ready, 503 otherwise", response=ReadyResponse,
        also=(503,), tags=("ops",),
    )
    async def readyz(_: Request) -> Response:
        down = failing()
        body = ReadyResponse(ready=not down, failing=down)
        return Response(body.model_dump_json(), status=503 if down else 200, content_type="application/json")
