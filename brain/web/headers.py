"""Request headers read straight from the ASGI scope, for headers a request usually lacks.

werkzeug's `Headers.get` and `in` raise and catch a KeyError for every miss, which costs more than a scan of the
few (name, value) pairs a request carries; `/health` and every route ask for several absent headers per request.
ASGI gives header names in lower case, as bytes; values are decoded as latin-1, as quart.asgi does.
"""

from __future__ import annotations

from collections.abc import Collection

from quart import request as quart_request


def header(name: bytes) -> str | None:
    """The first value of the request header `name` (lower-case bytes), or None when the request has none."""
    for key, value in quart_request.scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def has_any(names: Collection[bytes]) -> bool:
    """True when the request carries any header named in `names` (lower-case bytes)."""
    return any(key in names for key, _ in quart_request.scope["headers"])
