"""The router's input checks: a tenant or an id is valid only when the whole value matches its pattern; a body is
read whole, within BODY_TIMEOUT."""

from __future__ import annotations

import pytest
from pydantic import BaseModel
from quart import Quart, Response

from brain.web.router import Request, Router, is_item_id, is_tenant

ITEM_ID = "0123456789abcdef" * 2


@pytest.mark.parametrize(
    ("value", "valid"),
    [("t-1", True), ("A.b_c-9", True), ("a" * 64, True), ("t-1\n", False), ("t-1\n\n", False), ("\nt-1", False),
     ("", False), ("a" * 65, False), ("-t", False)],
)
def test_tenant_must_match_as_a_whole(value: str, valid: bool) -> None:
    """The X-Tenant-ID header cannot carry a newline over HTTP; the check must not rely on that."""
    assert is_tenant(value) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [(ITEM_ID, True), (ITEM_ID + "\n", False), (ITEM_ID[:-1], False), (ITEM_ID.upper(), False), ("", False)],
)
def test_item_id_must_match_as_a_whole(value: str, valid: bool) -> None:
    assert is_item_id(value) is valid


def _body_app(body_timeout: float) -> tuple[Quart, list[int]]:
    """A Quart app with one JSON route declared through the Router, recording the body lengths its handler saw."""
    seen: list[int] = []
    router = Router(title="t", version="0")

    @router.route("POST", "/echo", summary="echo", body=Echo)
    async def echo(_: Request, body: Echo) -> Response:
        seen.append(len(body.text))
        return Response(body.text, content_type="text/plain")

    app = Quart(__name__)
    app.config["BODY_TIMEOUT"] = body_timeout
    router.install(app)
    return app, seen


class Echo(BaseModel):
    text: str


async def test_a_body_sent_in_parts_is_read_whole() -> None:
    app, seen = _body_app(body_timeout=30)
    async with app.test_app() as test_app, test_app.test_client().request(
        "/echo", method="POST", headers={"Content-Type": "application/json"}
    ) as connection:
        for part in (b'{"te', b'xt": "abc', b'def"}'):
            await connection.send(part)
        await connection.send_complete()
    assert connection.status_code == 200
    assert connection.response_data == b"abcdef"
    assert seen == [6]


async def test_a_body_that_stops_arriving_is_408_and_the_route_never_runs() -> None:
    """BODY_TIMEOUT still bounds the wait (read_body replaced Quart's get_data and its wait_for)."""
    app, seen = _body_app(body_timeout=0.2)
    async with app.test_app() as test_app, test_app.test_client().request(
        "/echo", method="POST", headers={"Content-Type": "application/json"}
    ) as connection:
        await connection.send(b'{"text": "never fini')
    assert connection.status_code == 408
    assert seen == []
