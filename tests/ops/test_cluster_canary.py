"""The canary's verdicts on probe answers (no cluster: these are the rules the live run applies; the live run is
tests/cluster/test_canary_live.py)."""

from __future__ import annotations

import pytest

from ops.cluster_canary import MARKER, Canary, CanaryFailed


def test_ok_needs_the_servers_marker() -> None:
    assert Canary._ok({"result": "ok", "body": f"HTTP/1.0 200 OK\r\n\r\n{MARKER}\n"})
    assert Canary._ok({"result": "ok", "body": "HTTP/1.0 200 OK\r\n\r\nsomeone else"}) is None
    assert Canary._ok({"result": "timeout"}) is None


def test_only_a_timeout_counts_as_denied() -> None:
    assert Canary._denied({"result": "timeout"}) == {"result": "timeout"}


def test_refused_is_a_reset_not_a_policy() -> None:
    with pytest.raises(CanaryFailed, match="TCP reset"):
        Canary._denied({"result": "refused"})


def test_still_connecting_is_not_yet_denied() -> None:
    assert Canary._denied({"result": "ok", "body": MARKER}) is None


def test_other_errors_never_count_as_a_policy() -> None:
    with pytest.raises(CanaryFailed, match="no policy causes"):
        Canary._denied({"result": "error", "error": "Network is unreachable"})
