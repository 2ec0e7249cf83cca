"""The router's input checks: a tenant or an id is valid only when the whole value matches its pattern."""

from __future__ import annotations

import pytest

from brain.web.router import is_item_id, is_tenant

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
