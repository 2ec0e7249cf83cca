"""What both apps share around their routes: JSON errors, request metrics, `/metrics` and `/openapi.json`.

Every label of the request metrics takes its value from a fixed set: the app, a method of `KNOWN_METHODS`, the
matched route template (or "unmatched"), a status or error code the service itself chose. A label a client could
choose would add a series per distinct value, and in multiprocess mode fill the shared metrics directory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope
from prometheus_client import Counter, Histogram
from quart import Quart, Response, current_app, g, jsonify
from quart import request as quart_request
from werkzeug.exceptions import HTTPException

from brain import logs, metrics
from brain.errors import APIError
from brain.web.headers import header
from brain.web.router import Request, Router

log = logging.getLogger(__name__)

#: The methods of RFC 9110, and PATCH (RFC 5789). A known method a route lacks is a 405 (with Allow); any other
#: is a 501 answered before Quart sees the request, so before any metric or hook runs.
KNOWN_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
ASGIApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]
_UNKNOWN_METHOD_BODY: Final = json.dumps(
    {"error": "method_not_implemented", "detail": "the request method is not one this service implements"}
).encode()


def _error(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify({"error": error, "detail": detail})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def refuse_unknown_methods(asgi_app: ASGIApp) -> ASGIApp:
    """Wrap `asgi_app` so that a request with a method outside KNOWN_METHODS gets 501 and never reaches it."""

    async def guarded(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "http" and scope["method"] not in KNOWN_METHODS:
            headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_UNKNOWN_METHOD_BODY))]
            await send({"type": "http.response.start", "status": 501, "headers": headers})
            await send({"type": "http.response.body", "body": _UNKNOWN_METHOD_BODY, "more_body": False})
            return
        await asgi_app(scope, receive, send)

    return guarded


def _json_404(detail: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"error": "not_found", "detail": detail}).encode()
    return [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))], body


def serve_metrics_apart(asgi_app: ASGIApp, metrics_port: int) -> ASGIApp:
    """Wrap `asgi_app` so that `/metrics` is served on connections to `metrics_port` only, and that port serves
    nothing else: the monitoring namespace may reach that port and no other (k8s/base/networkpolicies.yaml).

    The local port of the connection (the ASGI scope's `server`) tells the two apart: Hypercorn binds both ports
    (brain/cli.py). A scrape is answered here, before Quart, so it touches no request metric, limit or hook."""

    async def routed(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await asgi_app(scope, receive, send)
            return
        server = scope.get("server")
        on_metrics_port = server is not None and server[1] == metrics_port
        if on_metrics_port and scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD"):
            body, content_type = metrics.render()
            headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body,
                        "more_body": False})
            return
        if on_metrics_port or scope["path"] == "/metrics":
            where = "GET /metrics only" if on_metrics_port else f"/metrics on port {metrics_port} only"
            headers, body = _json_404(f"this port serves no {scope['path']}: {where}")
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        await asgi_app(scope, receive, send)

    return routed


def _route_label() -> str:
    rule = quart_request.url_rule
    return rule.rule if rule is not None else "unmatched"


def add_standard_routes(router: Router) -> None:
    """Document and serve `/metrics` and `/openapi.json` on `router`."""

    @router.route("GET", "/metrics", summary="Prometheus metrics", media_type="text/plain", tags=("ops",))
    async def metrics_text(_: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, status=200, content_type=content_type)

    @router.route("GET", "/openapi.json", summary="This OpenAPI document", tags=("ops",))
    async def openapi_document(_: Request) -> Response:
        return jsonify(router.spec(auth=bool(current_app.config.get("SOMABRAIN_AUTH")),
                                   metrics=not current_app.config.get("SOMABRAIN_METRICS_PORT")))


def install(
    app: Quart,
    router: Router,
    app_name: str,
    max_body_bytes: int,
    tenant_resolver: Callable[[], Awaitable[str]] | None = None,
    auth: bool = False,
    metrics_port: int | None = None,
) -> None:
    """Error handlers, metrics hooks and the body size limit; call after every route is declared. With
    `metrics_port`, `/metrics` is served on that port alone (serve_metrics_apart) and leaves the OpenAPI document."""
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    app.config["JSON_SORT_KEYS"] = False
    app.config["SOMABRAIN_AUTH"] = auth
    app.config["SOMABRAIN_METRICS_PORT"] = metrics_port

    @app.before_serving
    async def _name_the_loop() -> None:
        # What `--loop` chose, as it runs: the event loop's class (uvloop.Loop, or asyncio's _UnixSelectorEventLoop).
        loop = type(asyncio.get_running_loop())
        log.info("%s serving on the event loop %s.%s", app_name, loop.__module__, loop.__qualname__)

    @app.before_request
    async def _start_timer() -> None:
        g.started = time.perf_counter()
        g.request_id = logs.new_request_id(header(b"x-request-id"))
        logs.request_id.set(g.request_id)

    # The labelled series of each (method, route, status) seen, so that a request looks up one dict entry instead
    # of two `labels()` calls (each takes the metric's lock); bounded by the same fixed label sets as the metrics.
    series: dict[tuple[str, str, int], tuple[Histogram, Counter]] = {}

    @app.after_request
    async def _record(response: Response) -> Response:
        key = (quart_request.method, _route_label(), response.status_code)
        found = series.get(key)
        if found is None:
            method, route, status = key
            found = series[key] = (metrics.LATENCY.labels(app_name, method, route),
                                   metrics.REQUESTS.labels(app_name, method, route, str(status)))
        latency, requests = found
        started = getattr(g, "started", None)
        if started is not None:
            latency.observe(time.perf_counter() - started)
        requests.inc()
        rid = getattr(g, "request_id", None)
        if rid:
            response.headers["X-Request-ID"] = rid
        return response

    @app.errorhandler(APIError)
    async def _api_error(exc: APIError) -> Response:
        metrics.ERRORS.labels(app_name, quart_request.method, _route_label(), exc.error).inc()
        return _error(exc.status, exc.error, exc.detail, exc.headers)

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(status, "http_error")
        detail = {
            404: f"no route {quart_request.path}",
            405: f"{quart_request.method} is not allowed on {quart_request.path}",
            413: f"the request body exceeds {max_body_bytes} bytes",
        }.get(status, exc.description or exc.name)
        headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
        metrics.ERRORS.labels(app_name, quart_request.method, _route_label(), code).inc()
        return _error(status, code, detail, headers)

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", quart_request.method, quart_request.path)
        metrics.ERRORS.labels(app_name, quart_request.method, _route_label(), "internal").inc()
        return _error(500, "internal", "unexpected server error; it has been logged")

    router.install(app, tenant_resolver)
    # Quart's documented middleware hook; mypy sees the assignment as replacing a method.
    served = serve_metrics_apart(app.asgi_app, metrics_port) if metrics_port else app.asgi_app
    app.asgi_app = refuse_unknown_methods(served)  # type: ignore[method-assign,assignment]
