"""Bad input gets a clear 4xx JSON error, never a 500, and writes nothing."""

from __future__ import annotations

import json

import pytest
from quart.typing import TestClientProtocol as Client

from brain.web.schemas import (
    DEFAULT_MAX_BODY_BYTES,
    MAX_ITEM_BODY_BYTES,
    MAX_META_KEY,
    MAX_META_KEYS,
    MAX_META_TEXT,
    MAX_TEXT,
)
from tests.api.helpers import headers

BAD_BODIES = [
    ("/remember", b"{not json", 400, "invalid_json"),
    ("/remember", b"", 400, "invalid_json"),
    ("/remember", b"[]", 422, "validation_error"),
    ("/remember", b'{"content": 5}', 422, "validation_error"),
    ("/remember", b'{"content": ""}', 422, "validation_error"),
    ("/remember", b'{"content": "x", "importance": 2}', 422, "validation_error"),
    ("/remember", b'{"content": "x", "importance": "high"}', 422, "validation_error"),
    ("/remember", b'{"content": "x", "extra": 1}', 422, "validation_error"),
    ("/remember", b'{"content": "nul \\u0000 byte"}', 422, "validation_error"),
    ("/remember", b'{"content": "x", "metadata": {"k": {"nested": 1}}}', 422, "validation_error"),
    ("/remember", b'{"metadata": {}}', 422, "validation_error"),
    ("/recall", b'{"query": "x", "top_k": 0}', 422, "validation_error"),
    ("/recall", b'{"query": "x", "top_k": "5"}', 422, "validation_error"),
    ("/recall", b'{"query": "x", "top_k": 1000}', 422, "validation_error"),
    ("/act", b'{"task": null}', 422, "validation_error"),
    ("/act", b'{"task": ["a"]}', 422, "validation_error"),
]


@pytest.mark.parametrize(("path", "body", "status", "error"), BAD_BODIES)
async def test_bad_bodies(client: Client, tenant: str, path: str, body: bytes, status: int,
                          error: str) -> None:
    hdrs = {**headers(tenant), "Content-Type": "application/json"}
    response = await client.post(path, data=body, headers=hdrs)
    payload = await response.get_json()
    assert response.status_code == status
    assert payload["error"] == error
    assert payload["detail"]
    assert "Traceback" not in payload["detail"]
    recalled = await client.post("/recall", json={"query": "x"}, headers=headers(tenant))
    assert await recalled.get_json() == {"wm": [], "memory": []}  # nothing half-written


@pytest.mark.parametrize(
    ("tenant_header", "error"),
    [
        (None, "missing_tenant"),
        ("", "invalid_tenant"),
        ("-leading-dash", "invalid_tenant"),
        ("a" * 65, "invalid_tenant"),
        ("bad/slash", "invalid_tenant"),
        ("semi;colon", "invalid_tenant"),
    ],
)
async def test_bad_tenants(client: Client, tenant_header: str | None, error: str) -> None:
    hdrs = {} if tenant_header is None else {"X-Tenant-ID": tenant_header}
    response = await client.post("/recall", json={"query": "x"}, headers=hdrs)
    assert response.status_code == 400
    assert (await response.get_json())["error"] == error


async def test_oversized_body_is_413(client: Client, tenant: str) -> None:
    """The limit is the documented one (2 MiB, from the largest valid item), not the 32 MiB it used to be: a body
    one byte over it is refused before it is read as JSON."""
    assert DEFAULT_MAX_BODY_BYTES == 2 * 1024 * 1024 > MAX_ITEM_BODY_BYTES
    big = b'{"content": "' + b"a" * (DEFAULT_MAX_BODY_BYTES - 14) + b'"}'
    assert len(big) == DEFAULT_MAX_BODY_BYTES + 1
    response = await client.post("/remember", data=big, headers={**headers(tenant), "Content-Type": "application/json"})
    assert response.status_code == 413
    assert (await response.get_json())["error"] == "payload_too_large"


def _largest_item() -> bytes:
    """The largest valid item, with every character in JSON's longest escape (outside the BMP: two \\uXXXX)."""
    wide = "\U0001F600"
    metadata = {f"k{i:02d}" + "m" * (MAX_META_KEY - 3): wide * MAX_META_TEXT for i in range(MAX_META_KEYS)}
    return json.dumps({"content": wide * MAX_TEXT, "metadata": metadata, "importance": 0.5}).encode()


async def test_the_largest_valid_item_fits_the_body_limit(client: Client, tenant: str) -> None:
    body = _largest_item()
    assert 1_500_000 < len(body) <= MAX_ITEM_BODY_BYTES
    response = await client.post("/remember", data=body,
                                 headers={**headers(tenant), "Content-Type": "application/json"})
    assert response.status_code == 201, await response.get_data(as_text=True)
    one_more = json.loads(body)
    one_more["content"] += "x"  # a character over MAX_TEXT: the model refuses it, whatever the body limit
    refused = await client.post("/remember", json=one_more, headers=headers(tenant))
    assert refused.status_code == 422


async def test_unknown_route_and_wrong_method(client: Client) -> None:
    missing = await client.get("/nope")
    assert missing.status_code == 404
    assert (await missing.get_json())["error"] == "not_found"
    wrong = await client.get("/remember")
    assert wrong.status_code == 405
    assert "POST" in wrong.headers["Allow"]
    assert (await wrong.get_json())["error"] == "method_not_allowed"


async def test_malformed_item_id(client: Client, tenant: str) -> None:
    response = await client.delete("/memory/NOT-AN-ID", headers=headers(tenant))
    assert response.status_code == 400
    assert (await response.get_json())["error"] == "invalid_id"


async def test_item_id_with_a_trailing_newline_is_400(client: Client, tenant: str) -> None:
    """`re.match(...$)` let "<32 hex>\\n" through: `$` also matches before a trailing newline."""
    response = await client.delete("/memory/" + "a" * 32 + "%0A", headers=headers(tenant))
    assert response.status_code == 400
    assert (await response.get_json())["error"] == "invalid_id"


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded", "multipart/form-data",
     "text/json", "application/jsonx", "application/json; charset=latin-1", "application/+json", "json"],
)
async def test_json_routes_answer_415_to_other_media_types(client: Client, tenant: str, content_type: str) -> None:
    for path, body in (("/remember", b'{"content": "smuggled"}'), ("/recall", b'{"query": "smuggled"}'),
                       ("/act", b'{"task": "smuggled"}')):
        response = await client.post(path, data=body, headers={**headers(tenant), "Content-Type": content_type})
        assert response.status_code == 415, (path, content_type)
        assert await response.get_json() == {
            "error": "unsupported_media_type",
            "detail": "the request body must be application/json (or application/*+json) in UTF-8",
        }
    recalled = await client.post("/recall", json={"query": "smuggled"}, headers=headers(tenant))
    assert await recalled.get_json() == {"wm": [], "memory": []}  # nothing written


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "Application/JSON", "application/json; charset=utf-8", "application/json;charset=UTF-8",
     "application/vnd.somabrain+json", "application/merge-patch+json; charset=utf-8", None],
)
async def test_json_media_types_are_accepted(client: Client, tenant: str, content_type: str | None) -> None:
    """None: a body with no Content-Type at all is still read as JSON (current callers send some without one)."""
    hdrs = headers(tenant) if content_type is None else {**headers(tenant), "Content-Type": content_type}
    response = await client.post("/recall", data=b'{"query": "x"}', headers=hdrs)
    assert response.status_code == 200, (content_type, await response.get_data(as_text=True))
