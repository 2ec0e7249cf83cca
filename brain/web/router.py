"""A route table that serves requests and generates the OpenAPI document from the same declarations.

Each route names its request model, response model, status and which inputs it takes (tenant header, path
parameters). `Router.install()` registers the handlers on a Quart app, with parsing and validation done here once;
`Router.openapi()` builds the document from the same table, so the spec cannot drift from the code.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from quart import Quart, Response
from quart import request as quart_request
from werkzeug.exceptions import RequestTimeout
from werkzeug.http import parse_options_header

from brain.errors import APIError
from brain.web.schemas import ID_PATTERN, TENANT_PATTERN, ErrorBody

TENANT_HEADER = "X-Tenant-ID"
_TENANT_RE = re.compile(TENANT_PATTERN)
_ID_RE = re.compile(ID_PATTERN)
_PARAM = re.compile(r"\{(\w+)\}")

Handler = Callable[..., Awaitable[BaseModel | Response]]

_ERROR_TEXT = {
    400: "Malformed request: invalid JSON, header or path parameter",
    401: "Missing or invalid credentials",
    403: "Refused by policy",
    404: "No such item",
    409: "Conflicts with what is stored (an idempotency key used for a different body); nothing was written",
    413: "Request body too large",
    415: "The body is not application/json (or application/*+json) in UTF-8",
    422: "The body does not match the schema",
    429: "Rate limit exceeded",
    503: "A required dependency is unavailable; the error code says whether anything was written",
}


@dataclass(frozen=True)
class HeaderParam:
    """An optional request header a route reads itself: declared in the OpenAPI document; the handler validates it
    (and answers 400 for a bad value)."""

    name: str
    pattern: str
    description: str


@dataclass(frozen=True)
class Request:
    """What a handler receives: the validated tenant (if the route takes one) and path parameters."""

    tenant: str | None
    params: dict[str, str]


@dataclass
class Route:
    method: str
    path: str  # OpenAPI style: /memory/{item_id}
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    tenant: bool = False
    errors: tuple[int, ...] = ()
    media_type: str = "application/json"
    tags: tuple[str, ...] = ()
    #: Other statuses answered with the same response model (e.g. /readyz: 503 with the readiness body).
    also: tuple[int, ...] = ()
    #: OpenAPI links from the success response to follow-up operations (schemathesis' stateful phase uses them).
    links: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Optional headers the handler reads (e.g. Idempotency-Key).
    headers: tuple[HeaderParam, ...] = ()

    @property
    def quart_rule(self) -> str:
        return _PARAM.sub(r"<\1>", self.path)

    @property
    def params(self) -> list[str]:
        return _PARAM.findall(self.path)

    def error_statuses(self) -> list[int]:
        statuses = set(self.errors)
        if self.tenant or self.params or self.body or self.headers:
            statuses.add(400)
        if self.body:
            statuses |= {413, 415, 422}
        return sorted(statuses)


@dataclass
class Router:
    title: str
    version: str
    description: str = ""
    routes: list[Route] = field(default_factory=list)
    #: Extra statuses every tenant route may answer (e.g. 401/403/429 once auth and rate limits are on).
    tenant_errors: tuple[int, ...] = ()
    _specs: dict[tuple[bool, bool], dict[str, Any]] = field(default_factory=dict, repr=False)

    def spec(self, auth: bool = False, metrics: bool = True) -> dict[str, Any]:
        """The OpenAPI document, built once (per auth mode) from the route table. `metrics=False`: without
        `/metrics`, which is then served on a port of its own (brain.web.common.serve_metrics_apart)."""
        key = (auth, metrics)
        if key not in self._specs:
            document = self.openapi(auth)
            if not metrics:
                document["paths"] = {p: v for p, v in document["paths"].items() if p != "/metrics"}
            self._specs[key] = document
        return self._specs[key]

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        body: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        tenant: bool = False,
        errors: tuple[int, ...] = (),
        media_type: str = "application/json",
        tags: tuple[str, ...] = (),
        also: tuple[int, ...] = (),
        links: dict[str, dict[str, Any]] | None = None,
        headers: tuple[HeaderParam, ...] = (),
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append(
                Route(method, path, handler, summary, body, response, status, tenant, errors, media_type, tags, also,
                      links or {}, headers)
            )
            return handler

        return register

    def install(self, app: Quart, tenant_resolver: Callable[[], Awaitable[str]] | None = None) -> None:
        """Register every route on `app`. `tenant_resolver` overrides the X-Tenant-ID header (auth uses it)."""
        for route in self.routes:
            app.add_url_rule(
                route.quart_rule,
                endpoint=f"{route.method.lower()}:{route.path}",
                view_func=_view(route, tenant_resolver),
                methods=[route.method],
            )

    def openapi(self, auth: bool = False) -> dict[str, Any]:
        """With `auth`, tenant routes need a bearer JWT (the tenant is its claim; X-Tenant-ID becomes optional)."""
        components: dict[str, Any] = {}
        paths: dict[str, dict[str, Any]] = {}
        for route in self.routes:
            op: dict[str, Any] = {
                "operationId": f"{route.handler.__name__}",
                "summary": route.summary,
                "responses": {},
            }
            if route.tags:
                op["tags"] = list(route.tags)
            parameters = [
                {
                    "name": name,
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": ID_PATTERN},
                }
                for name in route.params
            ]
            if route.tenant:
                parameters.append(
                    {
                        "name": TENANT_HEADER,
                        "in": "header",
                        "required": not auth,
                        "description": "The tenant whose memories this request reads or writes"
                        + (" (with auth on: optional, and must equal the token's tenant)" if auth else ""),
                        "schema": {"type": "string", "pattern": TENANT_PATTERN},
                    }
                )
            parameters += [
                {
                    "name": header.name,
                    "in": "header",
                    "required": False,
                    "description": header.description,
                    "schema": {"type": "string", "pattern": header.pattern},
                }
                for header in route.headers
            ]
            if parameters:
                op["parameters"] = parameters
            if auth and route.tenant:
                op["security"] = [{"bearerAuth": []}]
            if route.body is not None:
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(route.body, components, "validation")}},
                }
            ok: dict[str, Any] = {"description": "Success"}
            if route.response is not None:
                ok["content"] = {route.media_type: {"schema": _ref(route.response, components, "serialization")}}
            elif route.media_type != "application/json":
                ok["content"] = {route.media_type: {"schema": {"type": "string"}}}
            if route.links:
                ok["links"] = route.links
            op["responses"][str(route.status)] = ok
            for status in route.also:
                op["responses"][str(status)] = {**ok, "description": _ERROR_TEXT.get(status, "See the body")}
            errors = set(route.error_statuses())
            if route.tenant:
                errors |= set(self.tenant_errors)
            for status in sorted(errors - set(route.also)):
                op["responses"][str(status)] = {
                    "description": _ERROR_TEXT.get(status, "Error"),
                    "content": {"application/json": {"schema": _ref(ErrorBody, components, "serialization")}},
                }
            paths.setdefault(route.path, {})[route.method.lower()] = op
        document: dict[str, Any] = {
            "openapi": "3.1.0",
            "info": {"title": self.title, "version": self.version, "description": self.description},
            "paths": paths,
            "components": {"schemas": components},
        }
        if auth:
            document["components"]["securitySchemes"] = {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            }
        return document


def _ref(model: type[BaseModel], components: dict[str, Any], mode: str) -> dict[str, str]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)  # type: ignore[arg-type]
    for name, sub in schema.pop("$defs", {}).items():
        components.setdefault(name, sub)
    components.setdefault(model.__name__, schema)
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def is_tenant(value: str) -> bool:
    """The whole value must match: with `re.match`, the pattern's `$` also matches before a trailing newline."""
    return _TENANT_RE.fullmatch(value) is not None


def is_item_id(value: str) -> bool:
    """The whole value must match (see `is_tenant`): an id ending in a newline reached SomaMemory and the logs."""
    return _ID_RE.fullmatch(value) is not None


def header_tenant() -> str:
    raw = quart_request.headers.get(TENANT_HEADER)
    if raw is None:
        raise APIError(400, "missing_tenant", f"the {TENANT_HEADER} header is required")
    if not is_tenant(raw):
        raise APIError(
            400, "invalid_tenant", f"{TENANT_HEADER} must be 1-64 of A-Z a-z 0-9 _ . - and start with a letter or digit"
        )
    return raw


def is_json_media_type(content_type: str) -> bool:
    """application/json or application/<name>+json, in UTF-8 (the only encoding JSON has, RFC 8259).

    Anything else is refused, so that a body a browser may send cross-site without a preflight (text/plain, a
    form) is never read as JSON.
    """
    mimetype, options = parse_options_header(content_type)
    kind, _, subtype = mimetype.lower().partition("/")
    if kind != "application" or not (subtype == "json" or (subtype.endswith("+json") and subtype != "+json")):
        return False
    return options.get("charset", "utf-8").lower() in ("utf-8", "utf8")


def require_json_body() -> None:
    """415 unless the body is declared JSON. A body with no Content-Type at all is still read as JSON, as before:
    it claims no other media type, and existing callers (tests among them) send JSON without one."""
    content_type = quart_request.headers.get("Content-Type")
    if content_type is not None and not is_json_media_type(content_type):
        raise APIError(
            415, "unsupported_media_type", "the request body must be application/json (or application/*+json) in UTF-8"
        )


async def read_body() -> bytes:
    """The whole request body, as `quart_request.get_data(cache=False)` gives it: 413 past MAX_CONTENT_LENGTH, 408
    past BODY_TIMEOUT. Quart waits with `asyncio.wait_for`, which on Python 3.11 (our images' Python) wraps the wait
    in a new task: ~20 us per request, measured, against ~7 us for `asyncio.timeout`, which arms a timer only."""
    body = quart_request.body
    try:
        async with asyncio.timeout(quart_request.body_timeout):
            raw: bytes = await body
    except TimeoutError:
        raise RequestTimeout() from None
    body.clear()
    return raw


async def parse_body(model: type[BaseModel]) -> BaseModel:
    require_json_body()
    raw = await read_body()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False)
        if any(p["type"] == "json_invalid" for p in problems):
            raise APIError(400, "invalid_json", "the request body is not valid JSON") from None
        described = "; ".join(
            f"{'.'.join(str(part) for part in p['loc']) or 'body'}: {p['msg']}" for p in problems[:5]
        )
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise APIError(422, "validation_error", described + more) from None


def _view(route: Route, tenant_resolver: Callable[[], Awaitable[str]] | None) -> Callable[..., Awaitable[Response]]:
    async def view(**params: str) -> Response:
        for name, value in params.items():
            if not is_item_id(value):
                raise APIError(400, "invalid_id", f"path parameter {name} must be 32 lowercase hex digits")
        tenant = None
        if route.tenant:
            tenant = await tenant_resolver() if tenant_resolver else header_tenant()
        args: list[Any] = [Request(tenant=tenant, params=params)]
        if route.body is not None:
            args.append(await parse_body(route.body))
        result = await route.handler(*args)
        if isinstance(result, Response):
            return result
        return Response(result.model_dump_json(), status=route.status, content_type="application/json")

    view.__name__ = route.handler.__name__
    return view
