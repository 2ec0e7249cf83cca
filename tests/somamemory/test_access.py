"""SomaMemory serves data only to the holder of the service token (brain.somamemory.access), on real processes.

Before the token, any caller that could reach port 9595 read, planted or deleted any tenant's memories by naming
the tenant in X-Tenant-ID: `test_a_caller_without_the_token_gets_nothing` failed on that code (200 and the data).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from brain.errors import ConfigError
from brain.settings import Settings
from localservers.servers import MEMORY_TOKEN, AppServer, PostgresServer, memory_headers, wait_for

OTHER_TOKEN = "another-service-token-" + "fedcba9876543210" * 2


def _remember(url: str, tenant: str, content: str, token: str = MEMORY_TOKEN) -> httpx.Response:
    return httpx.post(f"{url}/remember", json={"content": content}, headers=memory_headers(tenant, token))


def test_a_caller_without_the_token_gets_nothing(memory_server: AppServer, tenant: str) -> None:
    url = memory_server.url
    stored = _remember(url, tenant, "the safe code is 4711")
    assert stored.status_code == 201
    item = stored.json()["id"]
    tenant_only = {"X-Tenant-ID": tenant}
    for token in (None, "-", OTHER_TOKEN, MEMORY_TOKEN + "x", MEMORY_TOKEN[:-1]):
        hdrs = tenant_only if token is None else {**tenant_only, "Authorization": f"Bearer {token}"}
        answers = [
            httpx.post(f"{url}/recall", json={"query": "safe code"}, headers=hdrs),
            httpx.post(f"{url}/remember", json={"content": "planted"}, headers=hdrs),
            httpx.delete(f"{url}/memories/{item}", headers=hdrs),
        ]
        for answer in answers:
            assert answer.status_code == 401, (token, answer.request.url, answer.text)
            assert answer.json()["error"] in ("service_token_required", "invalid_service_token")
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
            assert "4711" not in answer.text
    # Nothing was planted or deleted by the refused calls.
    found = httpx.post(f"{url}/recall", json={"query": "safe code planted"}, headers=memory_headers(tenant)).json()
    assert [r["id"] for r in found["results"]] == [item]


def test_a_basic_credential_is_not_a_bearer(memory_server: AppServer, tenant: str) -> None:
    answer = httpx.post(f"{memory_server.url}/recall", json={"query": "x"},
                        headers={"X-Tenant-ID": tenant, "Authorization": f"Basic {MEMORY_TOKEN}"})
    assert answer.status_code == 401 and answer.json()["error"] == "service_token_required"


def test_probes_and_metrics_stay_open(memory_server: AppServer) -> None:
    for path in ("/healthz", "/readyz", "/health", "/metrics", "/openapi.json"):
        assert httpx.get(memory_server.url + path).status_code == 200, path


def test_health_tells_the_caller_whether_its_token_is_accepted(memory_server: AppServer) -> None:
    def standing(hdrs: dict[str, str]) -> str:
        return str(httpx.get(f"{memory_server.url}/health", headers=hdrs).json()["service_token"])

    assert standing(memory_headers()) == "accepted"
    assert standing(memory_headers(token=OTHER_TOKEN)) == "refused"
    assert standing({}) == "absent"


@pytest.fixture
def rotating(postgres_server: PostgresServer, run_dir: Path) -> Iterator[AppServer]:
    """SomaMemory in the middle of a rotation: OTHER_TOKEN is current, MEMORY_TOKEN the previous one."""
    server = AppServer("memory", {"SOMABRAIN_POSTGRES_DSN": postgres_server.dsn, "SOMABRAIN_MEMORY_TOKEN": OTHER_TOKEN,
                                  "SOMABRAIN_MEMORY_TOKEN_PREVIOUS": MEMORY_TOKEN}, run_dir)
    server.start()
    yield server
    server.stop()


def test_during_a_rotation_both_tokens_are_accepted(rotating: AppServer, tenant: str) -> None:
    assert _remember(rotating.url, tenant, "old key", MEMORY_TOKEN).status_code == 201
    assert _remember(rotating.url, tenant, "new key", OTHER_TOKEN).status_code == 201
    assert _remember(rotating.url, tenant, "no key", "z" * 40).status_code == 401


def test_an_api_with_the_wrong_token_is_not_ready(memory_server: AppServer, strict_env: dict[str, str],
                                                  run_dir: Path) -> None:
    """A Secret out of step shows in the API's readiness, before any write fails."""
    api = AppServer("api", {**strict_env, "SOMABRAIN_MEMORY_TOKEN": OTHER_TOKEN}, run_dir)
    api.start(ready=False)
    try:
        wait_for(lambda: httpx.get(f"{api.url}/health").json()["components"]["memory"]["http"] is False,
                 "the API's health to report SomaMemory refusing its token")
        assert httpx.get(f"{api.url}/readyz").status_code == 503
    finally:
        api.stop()
    api = AppServer("api", strict_env, run_dir)
    api.start()  # ready: the right token
    try:
        assert httpx.get(f"{api.url}/health").json()["components"]["memory"]["http"] is True
    finally:
        api.stop()


def test_a_somamemory_without_tokens_serves_any_caller_in_dev(postgres_server: PostgresServer, run_dir: Path,
                                                              tenant: str) -> None:
    server = AppServer("memory", {"SOMABRAIN_POSTGRES_DSN": postgres_server.dsn, "SOMABRAIN_MEMORY_TOKEN": ""},
                       run_dir)
    server.start()
    try:
        answer = httpx.post(f"{server.url}/remember", json={"content": "dev"}, headers={"X-Tenant-ID": tenant})
        assert answer.status_code == 201
        assert httpx.get(f"{server.url}/health").json()["service_token"] == "not_required"
    finally:
        server.stop()


def _env(**extra: str) -> dict[str, str]:
    return {"SOMABRAIN_POSTGRES_DSN": "postgresql://u:p@db:5432/d", **{f"SOMABRAIN_{k}": v for k, v in extra.items()}}


def test_prod_somamemory_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="SOMABRAIN_MEMORY_TOKEN is not set"):
        Settings.from_env(_env(ENV="prod"), app="memory")
    assert Settings.from_env(_env(ENV="prod", MEMORY_TOKEN=MEMORY_TOKEN), app="memory").memory_tokens == (MEMORY_TOKEN,)


@pytest.mark.parametrize("bad", ["short", "x" * 31, "has a space " + "x" * 32, "t\u00f6ken" + "x" * 32])
def test_a_weak_or_unprintable_token_is_refused_without_showing_it(bad: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(_env(MEMORY_TOKEN=bad), app="memory")
    assert "SOMABRAIN_MEMORY_TOKEN" in str(refused.value) and bad not in str(refused.value)


def test_a_previous_token_needs_a_current_one() -> None:
    with pytest.raises(ConfigError, match="MEMORY_TOKEN_PREVIOUS is set but SOMABRAIN_MEMORY_TOKEN is not"):
        Settings.from_env(_env(MEMORY_TOKEN_PREVIOUS=MEMORY_TOKEN), app="memory")


def test_a_prod_api_with_a_memory_endpoint_needs_the_token() -> None:
    env = {"SOMABRAIN_ENV": "prod", "SOMABRAIN_REDIS_URL": "redis://r:6379/0", "SOMABRAIN_OPA_URL": "http://o:8181",
           "SOMABRAIN_JWT_PUBLIC_KEY_PATH": "/k.pem", "SOMABRAIN_JWT_ISSUER": "i", "SOMABRAIN_JWT_AUDIENCE": "a",
           "SOMABRAIN_MEMORY_HTTP_ENDPOINT": "http://somamemory:9595"}
    with pytest.raises(ConfigError, match="SOMABRAIN_MEMORY_TOKEN is not set"):
        Settings.from_env(env)
    assert Settings.from_env({**env, "SOMABRAIN_MEMORY_TOKEN": MEMORY_TOKEN}).memory_tokens == (MEMORY_TOKEN,)

