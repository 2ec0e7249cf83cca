"""Auth on, OPA on: real JWTs checked by the API process, real Rego decisions from the OPA stand-in.

Covers: valid tokens pass; every bad token of the table is refused with 401 and WWW-Authenticate; a tenant-A token
never reads tenant B; a mismatching X-Tenant-ID is denied by policy; a role without the grant is denied; OPA
stopped means protected routes deny (fail-closed); a missing key file is a start-up error.
"""

from __future__ import annotations

import os
import random
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from localservers.servers import AppServer
from tests.api.helpers import auth_env as _auth_env
from tests.helpers import jwt_keys
from tests.helpers.metrics import series
from tests.helpers.opa_standin import OpaStandin


@pytest.fixture(scope="module")
def api(strict_env: dict[str, str], keys: jwt_keys.KeyPair, opa: OpaStandin, run_dir: Path) -> Iterator[AppServer]:
    server = AppServer("api", _auth_env(strict_env, keys, run_dir, opa.url), run_dir)
    server.start()
    yield server
    server.stop()


def bearer(keys: jwt_keys.KeyPair, **claims: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt_keys.mint(keys, jwt_keys.standard_claims(**claims))}"}  # type: ignore[arg-type]


def test_valid_token_round_trip(api: AppServer, keys: jwt_keys.KeyPair, tenant: str) -> None:
    hdrs = bearer(keys, tenant=tenant, roles=["reader", "writer"])
    stored = httpx.post(f"{api.url}/remember", json={"content": "signed and sealed"}, headers=hdrs)
    assert stored.status_code == 201, stored.text
    found = httpx.post(f"{api.url}/recall", json={"query": "signed and sealed"}, headers=hdrs).json()
    assert [i["id"] for i in found["memory"]] == [stored.json()["id"]]


def test_bad_tokens_are_all_refused(api: AppServer, keys: jwt_keys.KeyPair, tenant: str) -> None:
    claims = jwt_keys.standard_claims(tenant=tenant)
    good = jwt_keys.mint(keys, claims)
    other = jwt_keys.generate_rsa_keys()
    now = int(time.time())
    bad = {
        "none alg": jwt_keys.forge_unsigned(claims),
        "HS256 signed with the public key": jwt_keys.forge_hs256(claims, keys.public_pem),
        "expired": jwt_keys.mint(keys, {**claims, "exp": now - 3600}),
        "future nbf": jwt_keys.mint(keys, {**claims, "nbf": now + 3600}),
        "wrong iss": jwt_keys.mint(keys, {**claims, "iss": "someone-else"}),
        "wrong aud": jwt_keys.mint(keys, {**claims, "aud": "another-api"}),
        "missing tenant claim": jwt_keys.mint(keys, jwt_keys.standard_claims(tenant=None)),
        "tampered payload": jwt_keys.tamper_payload(good, tenant="someone-else"),
        "signed by another key": jwt_keys.mint(other, claims),
        "garbage": "not.a.jwt",
    }
    refused = 0
    for name, token in bad.items():
        response = httpx.post(f"{api.url}/recall", json={"query": "x"}, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, (name, response.text)
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), name
        assert token not in response.text, name
        refused += 1
    no_header = httpx.post(f"{api.url}/recall", json={"query": "x"})
    assert no_header.status_code == 401
    assert refused == len(bad) == 10


def test_tenant_a_token_never_reads_tenant_b(api: AppServer, keys: jwt_keys.KeyPair, tenant: str) -> None:
    b = tenant + "-b"
    stored = httpx.post(f"{api.url}/remember", json={"content": "tenant B payroll"},
                        headers=bearer(keys, tenant=b, roles=["writer"]))
    assert stored.status_code == 201
    as_a = bearer(keys, tenant=tenant, roles=["reader"])
    assert httpx.post(f"{api.url}/recall", json={"query": "payroll"}, headers=as_a).json() == {"wm": [], "memory": []}
    # Asking for B's tenant by header while holding A's token is a cross-tenant attempt: the policy denies it.
    crossed = httpx.post(f"{api.url}/recall", json={"query": "payroll"}, headers={**as_a, "X-Tenant-ID": b})
    assert crossed.status_code == 403
    assert crossed.json()["error"] == "forbidden"


def test_role_without_grant_is_denied(api: AppServer, keys: jwt_keys.KeyPair, tenant: str) -> None:
    reader = bearer(keys, tenant=tenant, roles=["reader"])
    assert httpx.post(f"{api.url}/remember", json={"content": "x"}, headers=reader).status_code == 403
    assert httpx.post(f"{api.url}/act", json={"task": "x"}, headers=reader).status_code == 403
    assert httpx.post(f"{api.url}/act", json={"task": "x"},
                      headers=bearer(keys, tenant=tenant, roles=["actor"])).status_code == 200


def test_opa_down_means_deny(strict_env: dict[str, str], keys: jwt_keys.KeyPair, run_dir: Path,
                             tenant: str) -> None:
    standin = OpaStandin(log_dir=run_dir)
    standin.start()
    env = {**_auth_env(strict_env, keys, run_dir, standin.url), "SOMABRAIN_POLICY_CACHE_TTL": "0"}
    server = AppServer("api", env, run_dir)
    server.start()
    try:
        hdrs = bearer(keys, tenant=tenant, roles=["reader"])
        assert httpx.post(f"{server.url}/recall", json={"query": "x"}, headers=hdrs).status_code == 200
        standin.kill()
        denied = httpx.post(f"{server.url}/recall", json={"query": "x"}, headers=hdrs)
        assert denied.status_code == 503
        assert denied.json()["error"] == "policy_unavailable"
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'somabrain_policy_decisions_total{outcome="unavailable"}' in metrics
    finally:
        server.stop()
        standin.stop()


def test_unreadable_key_file_is_a_startup_error(strict_env: dict[str, str], run_dir: Path) -> None:
    env = {**os.environ, **strict_env, "SOMABRAIN_DISABLE_AUTH": "0",
           "SOMABRAIN_JWT_PUBLIC_KEY_PATH": str(run_dir / "missing.pem"), "SOMABRAIN_JWT_ISSUER": "i",
           "SOMABRAIN_JWT_AUDIENCE": "a", "SOMABRAIN_OPA_URL": "http://127.0.0.1:1"}
    result = subprocess.run([sys.executable, "-m", "brain.cli", "api", "--bind", "127.0.0.1:1"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "SOMABRAIN_JWT_PUBLIC_KEY_PATH" in result.stderr
    assert "Traceback" not in result.stderr


def test_auth_cannot_be_disabled_in_strict_prod(strict_env: dict[str, str]) -> None:
    env = {**os.environ, **strict_env, "SOMABRAIN_DISABLE_AUTH": "1", "SOMABRAIN_ENV": "prod"}
    result = subprocess.run([sys.executable, "-m", "brain.cli", "api"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "SOMABRAIN_DISABLE_AUTH=1 is refused" in result.stderr


def test_unauthenticated_random_methods_leave_metrics_alone(api: AppServer) -> None:
    """Through real Hypercorn, with no token: the exposition has the same series before and after."""
    rng = random.Random(500)
    httpx.get(f"{api.url}/metrics")  # a scrape's own series appear from the next scrape on
    before = series(httpx.get(f"{api.url}/metrics").text)
    for _ in range(200):
        method = "".join(rng.choices(string.ascii_letters, k=rng.randint(3, 16)))
        response = httpx.request(method, f"{api.url}{rng.choice(['/remember', '/recall', '/nope', '/metrics'])}")
        assert response.status_code == 501, (method, response.status_code)
        assert response.json()["error"] == "method_not_implemented"
    assert series(httpx.get(f"{api.url}/metrics").text) == before
