"""brain.policy against the real OPA stand-in subprocess loading the real k8s/policy/somabrain.rego."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from brain.errors import APIError, ConfigError
from brain.policy import Decision, PolicyClient
from tests.helpers.opa_standin import POLICY_FILE, OpaStandin

READER: dict[str, Any] = {
    "method": "POST",
    "route": "/recall",
    "path": "/recall",
    "tenant": "acme",
    "subject": "user-1",
    "roles": ["reader"],
}


class Clock:
    """A hand-advanced monotonic clock, so cache expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def decisions(outcome: str) -> float:
    return REGISTRY.get_sample_value("somabrain_policy_decisions_total", {"outcome": outcome}) or 0.0


@pytest.fixture
def opa(tmp_path: Path) -> Iterator[OpaStandin]:
    """A fresh stand-in per test: several tests stop or kill it."""
    with OpaStandin([POLICY_FILE], log_dir=tmp_path) as server:
        yield server


@pytest.fixture
async def client(opa: OpaStandin) -> AsyncIterator[PolicyClient]:
    policy = PolicyClient(opa.url, timeout=2.0, cache_ttl=60.0)
    yield policy
    await policy.aclose()


async def test_allow(client: PolicyClient) -> None:
    before = decisions("allow")
    assert await client.decide(**READER) == Decision(True, "allowed", cached=False)
    assert decisions("allow") == before + 1


async def test_deny_is_403_and_not_cached(client: PolicyClient, opa: OpaStandin) -> None:
    writer_recall = {**READER, "roles": ["writer"]}
    before = decisions("deny")
    first = await client.decide(**writer_recall)
    second = await client.decide(**writer_recall)
    assert first == second == Decision(False, "denied", cached=False)
    assert opa.data_requests() == 2
    assert decisions("deny") == before + 2
    with pytest.raises(APIError) as caught:
        first.raise_for_refusal()
    assert (caught.value.status, caught.value.error) == (403, "forbidden")


async def test_delete_memory_route(client: PolicyClient) -> None:
    delete = {"method": "DELETE", "route": "/memory/{id}", "path": "/memory/m-1", "roles": ["writer"]}
    assert (await client.decide(**{**READER, **delete})).allowed
    assert not (await client.decide(**{**READER, **delete, "path": "/memory/.."})).allowed


async def test_cross_tenant_denied(client: PolicyClient) -> None:
    assert await client.decide(**READER, requested_tenant="beta") == Decision(False, "denied")
    assert (await client.decide(**READER, requested_tenant="acme")).allowed


async def test_cached_allow_never_answers_cross_tenant_or_fewer_roles(client: PolicyClient, opa: OpaStandin) -> None:
    assert (await client.decide(**READER)).allowed
    assert (await client.decide(**READER)).cached
    assert await client.decide(**READER, requested_tenant="beta") == Decision(False, "denied")
    assert await client.decide(**{**READER, "roles": []}) == Decision(False, "denied")
    assert await client.decide(**{**READER, "tenant": "beta"}) == Decision(True, "allowed", cached=False)
    assert opa.data_requests() == 4


async def test_cache_hit_does_not_call_opa(client: PolicyClient, opa: OpaStandin) -> None:
    assert await client.decide(**READER) == Decision(True, "allowed", cached=False)
    assert opa.data_requests() == 1
    before = decisions("allow")
    for _ in range(5):
        assert await client.decide(**READER) == Decision(True, "allowed", cached=True)
    assert opa.data_requests() == 1
    assert decisions("allow") == before + 5, "cached decisions are counted too"


async def test_opa_stopped_fails_closed(client: PolicyClient, opa: OpaStandin) -> None:
    assert await client.ping()
    opa.kill()
    before = decisions("unavailable")
    decision = await client.decide(**READER)
    assert decision == Decision(False, "policy_unavailable")
    assert decisions("unavailable") == before + 1
    assert not await client.ping()
    with pytest.raises(APIError) as caught:
        decision.raise_for_refusal()
    assert (caught.value.status, caught.value.error) == (503, "policy_unavailable")


async def test_cached_allow_survives_opa_stop_until_expiry(opa: OpaStandin) -> None:
    clock = Clock()
    client = PolicyClient(opa.url, timeout=2.0, cache_ttl=2.0, clock=clock)
    try:
        assert await client.decide(**READER) == Decision(True, "allowed", cached=False)
        opa.kill()
        clock.now += 1.9
        assert await client.decide(**READER) == Decision(True, "allowed", cached=True)
        assert await client.decide(**{**READER, "subject": "user-2"}) == Decision(False, "policy_unavailable")
        clock.now += 0.1
        assert await client.decide(**READER) == Decision(False, "policy_unavailable")
    finally:
        await client.aclose()


async def test_recovers_when_opa_returns(client: PolicyClient, opa: OpaStandin) -> None:
    assert (await client.decide(**READER)).allowed
    opa.stop()
    assert (await client.decide(**{**READER, "subject": "user-2"})).reason == "policy_unavailable"
    opa.start()
    assert await client.ping()
    assert await client.decide(**{**READER, "subject": "user-2"}) == Decision(True, "allowed", cached=False)


async def test_cache_disabled_with_zero_ttl(opa: OpaStandin) -> None:
    client = PolicyClient(opa.url, timeout=2.0, cache_ttl=0)
    try:
        for _ in range(3):
            assert await client.decide(**READER) == Decision(True, "allowed", cached=False)
        assert opa.data_requests() == 3
    finally:
        await client.aclose()


async def test_timeout_fails_closed() -> None:
    """A peer that accepts TCP (kernel backlog) but never answers: the total timeout must refuse."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        client = PolicyClient(f"http://127.0.0.1:{port}", timeout=0.2)
        try:
            assert await client.decide(**READER) == Decision(False, "policy_unavailable")
            assert not await client.ping()
        finally:
            await client.aclose()


async def test_non_200_fails_closed(opa: OpaStandin) -> None:
    client = PolicyClient(f"{opa.url}/not-opa", timeout=2.0)
    try:
        assert await client.decide(**READER) == Decision(False, "policy_unavailable")
        assert opa.data_requests() == 0
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("rego", "label"),
    [
        ("package other\n\nallow := true\n", "rule-missing"),
        ('package somabrain\n\nallow := "yes"\n', "non-boolean"),
        ("package somabrain\n\nallow := true if { input.never }\n", "no-default"),
    ],
)
async def test_undefined_or_non_boolean_fails_closed(tmp_path: Path, rego: str, label: str) -> None:
    policy_file = tmp_path / f"{label}.rego"
    policy_file.write_text(rego)
    before = decisions("undefined")
    with OpaStandin([policy_file], log_dir=tmp_path) as server:
        client = PolicyClient(server.url, timeout=2.0)
        try:
            decision = await client.decide(**READER)
        finally:
            await client.aclose()
    assert decision == Decision(False, "policy_undefined")
    assert decisions("undefined") == before + 1
    with pytest.raises(APIError) as caught:
        decision.raise_for_refusal()
    assert caught.value.status == 503


def test_allowed_decision_raises_nothing() -> None:
    Decision(True, "allowed").raise_for_refusal()


@pytest.mark.parametrize("url", ["", "sb_opa:8181", "ftp://sb_opa:8181", "http://"])
def test_bad_url_is_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="SOMABRAIN_OPA_URL"):
        PolicyClient(url)


def test_metric_has_all_outcomes_from_the_start() -> None:
    for outcome in ("allow", "deny", "unavailable", "undefined"):
        assert REGISTRY.get_sample_value("somabrain_policy_decisions_total", {"outcome": outcome}) is not None


async def test_outage_logging_is_rate_limited(opa: OpaStandin, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    client = PolicyClient(opa.url, timeout=2.0, clock=clock)
    opa.kill()
    try:
        with caplog.at_level("WARNING", logger="brain.policy"):
            for _ in range(5):
                assert (await client.decide(**READER)).reason == "policy_unavailable"
            clock.now += 10.0
            assert (await client.decide(**READER)).reason == "policy_unavailable"
    finally:
        await client.aclose()
    messages = [r.getMessage() for r in caplog.records if r.name == "brain.policy"]
    assert len(messages) == 2
    assert "OPA unreachable" in messages[0] and "fail-closed" in messages[0]
    assert "(4 similar refusals not logged)" in messages[1]
