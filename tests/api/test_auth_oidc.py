"""Auth with an OpenID Connect issuer, end to end: the API app (Quart's test client, this session's real Redis,
Postgres and SomaMemory, the OPA stand-in on the real Rego) verifying tokens with the keys of a real issuer on
127.0.0.1 (tests/helpers/oidc_issuer.py), configured the way an operator would: SOMABRAIN_JWT_OIDC_ISSUER alone.

Covers: the issuer's token stores and recalls; a rotated key verifies after one refresh; a flood of unknown kids
is all 401 for at most one JWKS fetch; the issuer going down changes nothing for known keys and leaves the API
ready; an issuer down at start-up keeps the API unready (component `jwks`) and tokens at 503 until it answers.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from joserfc import jwt
from quart.typing import TestClientProtocol as Client

from brain.api.app import create_app
from brain.settings import Settings
from tests.helpers import jwt_keys
from tests.helpers.oidc_issuer import JWKS_PATH, LocalIssuer
from tests.helpers.opa_standin import OpaStandin

MIN_REFRESH_S = 1.0  # the smallest the setting allows: the test waits it out in real time


def oidc_env(strict_env: dict[str, str], issuer_url: str, opa_url: str) -> dict[str, str]:
    """Production settings with the keys of an OIDC issuer instead of a PEM file (no SOMABRAIN_JWT_ISSUER)."""
    return {
        **strict_env,
        "SOMABRAIN_ENV": "prod",
        "SOMABRAIN_JWT_OIDC_ISSUER": issuer_url,
        "SOMABRAIN_JWT_AUDIENCE": jwt_keys.AUDIENCE,
        "SOMABRAIN_JWT_JWKS_MIN_REFRESH": str(MIN_REFRESH_S),
        "SOMABRAIN_OPA_URL": opa_url,
    }


def bearer(issuer: LocalIssuer, **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer.mint(issuer.claims(**claims))}"}


async def health(client: Client) -> dict[str, Any]:
    body: dict[str, Any] = await (await client.get("/health")).get_json()
    return body


async def wait_ready(client: Client) -> dict[str, Any]:
    deadline = time.monotonic() + 30.0
    while not (body := await health(client))["ready"]:
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.1)
    return body


async def test_oidc_issuer_end_to_end(strict_env: dict[str, str], opa: OpaStandin, tenant: str) -> None:
    with LocalIssuer() as issuer:
        app = create_app(Settings.from_env(oidc_env(strict_env, issuer.url, opa.url)))
        async with app.test_app() as test_app:
            client = test_app.test_client()
            body = await wait_ready(client)
            assert body["components"]["jwks"]["ok"] is True and body["components"]["jwks"]["stale"] is False

            hdrs = bearer(issuer, tenant=tenant, roles=["reader", "writer"])
            stored = await client.post("/remember", json={"content": "keys from the issuer"}, headers=hdrs)
            assert stored.status_code == 201, await stored.get_data(as_text=True)
            found = await client.post("/recall", json={"query": "keys from the issuer"}, headers=hdrs)
            assert [i["id"] for i in (await found.get_json())["memory"]] == [(await stored.get_json())["id"]]
            assert issuer.count(JWKS_PATH) == 1

            # The issuer rotates: the first token of the new kid costs one fetch, once the interval has passed.
            issuer.rotate()
            await asyncio.sleep(MIN_REFRESH_S + 0.1)
            rotated = await client.post("/recall", json={"query": "x"}, headers=bearer(issuer, tenant=tenant))
            assert rotated.status_code == 200, await rotated.get_data(as_text=True)
            assert issuer.count(JWKS_PATH) == 2

            # A flood of made-up kids: every one a 401 with a challenge, and at most one more fetch for all of them.
            await asyncio.sleep(MIN_REFRESH_S + 0.1)
            attacker = jwt_keys.generate_rsa_keys().jwk()
            claims = issuer.claims(tenant=tenant)
            tokens = [jwt.encode({"alg": "RS256", "kid": secrets.token_hex(8)}, claims, attacker) for _ in range(100)]
            responses = await asyncio.gather(*(
                client.post("/recall", json={"query": "x"}, headers={"Authorization": f"Bearer {token}"})
                for token in tokens
            ))
            assert {r.status_code for r in responses} == {401}
            assert all(r.headers["WWW-Authenticate"].startswith('Bearer realm="somabrain"') for r in responses)
            assert issuer.count(JWKS_PATH) <= 3

            # The issuer goes down: cached keys keep verifying, unknown kids stay 401, and the API stays ready.
            issuer.down()
            await asyncio.sleep(MIN_REFRESH_S + 0.1)
            still = await client.post("/recall", json={"query": "x"}, headers=bearer(issuer, tenant=tenant))
            assert still.status_code == 200
            unknown = await client.post("/recall", json={"query": "x"},
                                        headers={"Authorization": f"Bearer {tokens[0]}"})
            assert unknown.status_code == 401
            body = await health(client)
            assert body["ready"] is True and body["components"]["jwks"]["ok"] is True


async def test_issuer_down_at_start_keeps_the_api_unready(
    strict_env: dict[str, str], opa: OpaStandin, tenant: str
) -> None:
    issuer = LocalIssuer()  # its port refuses until up()
    app = create_app(Settings.from_env(oidc_env(strict_env, issuer.url, opa.url)))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        await asyncio.sleep(0.5)  # a few health rounds
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "jwks" in (await ready.get_json())["failing"]
        assert (await health(client))["components"]["jwks"]["ok"] is False
        refused = await client.post("/recall", json={"query": "x"}, headers=bearer(issuer, tenant=tenant))
        assert refused.status_code == 503
        assert (await refused.get_json())["error"] == "auth_unavailable"
        with issuer:
            await wait_ready(client)
            served = await client.post("/recall", json={"query": "x"}, headers=bearer(issuer, tenant=tenant))
            assert served.status_code == 200, await served.get_data(as_text=True)
