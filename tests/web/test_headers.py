"""Header lookups from the ASGI scope agree with werkzeug's: first value, any case, None when absent."""

from __future__ import annotations

from quart import Quart
from quart import request as quart_request
from werkzeug.datastructures import Headers

from brain.web.headers import has_any, header


async def test_header_reads_what_werkzeug_reads() -> None:
    app = Quart(__name__)
    sent = Headers([("X-Request-ID", "first"), ("x-request-id", "second"), ("X-Note", "a, b")])
    async with app.test_request_context("/", headers=sent):
        assert header(b"x-request-id") == quart_request.headers.get("X-Request-ID") == "first"
        assert header(b"x-note") == quart_request.headers.get("X-Note")
        assert header(b"x-absent") is None and quart_request.headers.get("X-Absent") is None


async def test_has_any_matches_names_in_any_case() -> None:
    app = Quart(__name__)
    async with app.test_request_context("/", headers={"X-Real-IP": "203.0.113.7"}):
        assert has_any(frozenset({b"forwarded", b"x-real-ip"}))
        assert not has_any(frozenset({b"forwarded", b"x-forwarded-for"}))
