"""brain.oidc: JWT keys from a real OIDC issuer on 127.0.0.1 (tests/helpers/oidc_issuer.py), verified by brain.auth.

The issuer is a real HTTP(S) server that counts its requests; the cache's clock is a fake one, so that refresh
intervals and max ages are stepped through rather than slept.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from joserfc import jwt

from brain.auth import JWTVerifier, Principal
from brain.errors import APIError, ConfigError
from brain.oidc import MAX_DOCUMENT_BYTES, JWKSCache
from tests.helpers import jwt_keys
from tests.helpers.oidc_issuer import DISCOVERY_PATH, JWKS_PATH, LocalIssuer, make_tls

MIN_REFRESH = 30.0
MAX_AGE = 3600.0
REPO = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer() as running:
        yield running


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_cache(issuer: LocalIssuer, clock: FakeClock, **options: object) -> JWKSCache:
    settings: dict[str, object] = {"min_refresh_s": MIN_REFRESH, "max_age_s": MAX_AGE, "clock": clock, **options}
    return JWKSCache(issuer.url, **settings)  # type: ignore[arg-type]


def verifier_for(cache: JWKSCache, issuer: LocalIssuer, **options: object) -> JWTVerifier:
    return JWTVerifier(cache, issuer=issuer.url, audience=jwt_keys.AUDIENCE, **options)  # type: ignore[arg-type]


async def loaded(issuer: LocalIssuer, clock: FakeClock, **options: object) -> tuple[JWKSCache, JWTVerifier]:
    cache = make_cache(issuer, clock, **options)
    await cache.tick()
    assert cache.loaded, await cache.health()
    return cache, verifier_for(cache, issuer)


def bearer(token: str) -> str:
    return f"Bearer {token}"


async def refused(verifier: JWTVerifier, token: str) -> APIError:
    with pytest.raises(APIError) as caught:
        await verifier.authenticate(bearer(token))
    return caught.value


# --- keys from the issuer -----------------------------------------------------------------------------------


async def test_token_signed_by_the_issuers_key_verifies(issuer: LocalIssuer, clock: FakeClock) -> None:
    cache, verifier = await loaded(issuer, clock)
    token = issuer.mint(issuer.claims(tenant="acme", roles=["reader"]))
    assert await verifier.authenticate(bearer(token)) == Principal("user-1", "acme", ("reader",))
    assert verifier.verify(bearer(token)).tenant == "acme"  # the synchronous check uses the same cached keys
    assert (issuer.count(DISCOVERY_PATH), issuer.count(JWKS_PATH)) == (1, 1)
    health = await cache.health()
    assert health["ok"] and not health["stale"] and health["kids"] == [issuer.current] and "last_error" not in health


async def test_first_token_before_any_load_fetches_the_keys(issuer: LocalIssuer, clock: FakeClock) -> None:
    cache = make_cache(issuer, clock)
    verifier = verifier_for(cache, issuer)
    assert (await verifier.authenticate(bearer(issuer.mint(issuer.claims())))).subject == "user-1"
    assert issuer.count(JWKS_PATH) == 1


async def test_token_without_kid_is_tried_against_every_key(issuer: LocalIssuer, clock: FakeClock) -> None:
    first = issuer.current
    issuer.rotate()
    _, verifier = await loaded(issuer, clock)
    for kid in (first, issuer.current):
        token = jwt_keys.mint(issuer.keys[kid], issuer.claims())  # no kid header
        assert (await verifier.authenticate(bearer(token))).subject == "user-1"
    assert issuer.count(JWKS_PATH) == 1


async def test_rotation_new_kid_verifies_after_one_refresh(issuer: LocalIssuer, clock: FakeClock) -> None:
    cache, verifier = await loaded(issuer, clock)
    old = issuer.rotate()
    clock.advance(MIN_REFRESH)  # the last fetch is at least one interval old, as it is after any quiet spell
    token = issuer.mint(issuer.claims(tenant="beta"))
    assert (await verifier.authenticate(bearer(token))).tenant == "beta"
    assert issuer.count(JWKS_PATH) == 2
    # The old key is still listed: its tokens keep verifying, with no further fetch.
    assert (await verifier.authenticate(bearer(issuer.mint(issuer.claims(), kid=old)))).subject == "user-1"
    assert issuer.count(JWKS_PATH) == 2
    # Once the issuer retires it, the next refresh drops it, and its tokens are refused.
    old_pair = issuer.keys[old]
    issuer.retire(old)
    clock.advance(MAX_AGE)
    await cache.tick()
    assert cache.kids == (issuer.current,)
    error = await refused(verifier, jwt_keys.mint(old_pair, issuer.claims(), kid=old))
    assert (error.status, error.detail) == (401, "token signing key is not known")
    assert issuer.count(JWKS_PATH) == 3


async def test_rotation_inside_the_interval_waits_for_it(issuer: LocalIssuer, clock: FakeClock) -> None:
    """The bound also holds for a genuine rotation: a new kid seen less than an interval after the last fetch is
    refused until the interval is over, then verifies after one fetch."""
    _, verifier = await loaded(issuer, clock)
    issuer.rotate()
    token = issuer.mint(issuer.claims())
    assert (await refused(verifier, token)).status == 401
    assert issuer.count(JWKS_PATH) == 1
    clock.advance(MIN_REFRESH - 1)
    assert (await refused(verifier, token)).status == 401
    assert issuer.count(JWKS_PATH) == 1
    clock.advance(1)
    assert (await verifier.authenticate(bearer(token))).subject == "user-1"
    assert issuer.count(JWKS_PATH) == 2


async def test_flood_of_unknown_kids_costs_at_most_one_fetch(issuer: LocalIssuer, clock: FakeClock) -> None:
    cache, verifier = await loaded(issuer, clock)
    clock.advance(MIN_REFRESH)  # the worst case: a refresh is allowed when the flood starts
    attacker = jwt_keys.generate_rsa_keys().jwk()  # imported once: signing 200 tokens stays cheap
    claims = issuer.claims()
    tokens = [jwt.encode({"alg": "RS256", "kid": secrets.token_hex(8)}, claims, attacker) for _ in range(200)]
    results = await asyncio.gather(*(verifier.authenticate(bearer(t)) for t in tokens), return_exceptions=True)
    assert all(isinstance(r, APIError) and r.status == 401 for r in results), results[:3]
    assert {r.detail for r in results if isinstance(r, APIError)} == {"token signing key is not known"}
    assert issuer.count(JWKS_PATH) == 2  # the one at load, and one for the whole flood
    for token in tokens[:50]:  # and a second wave inside the interval: nothing more
        assert (await refused(verifier, token)).status == 401
    assert issuer.count(JWKS_PATH) == 2
    assert issuer.count(DISCOVERY_PATH) == 1
    assert (await verifier.authenticate(bearer(issuer.mint(issuer.claims())))).subject == "user-1"
    assert (await cache.health())["fetches"] == 2


async def test_concurrent_askers_share_one_fetch(issuer: LocalIssuer, clock: FakeClock) -> None:
    """Single flight, apart from the interval: with no minimum interval at all, 50 requests that arrive while a
    (slow) fetch is in flight all wait for that one fetch."""
    cache, verifier = await loaded(issuer, clock, min_refresh_s=0.0)
    issuer.rotate()
    issuer.delay_s = 0.3
    token = issuer.mint(issuer.claims())
    results = await asyncio.gather(*(verifier.authenticate(bearer(token)) for _ in range(50)))
    assert {p.subject for p in results} == {"user-1"}
    assert issuer.count(JWKS_PATH) == 2
    assert cache.fetches == 2


async def test_issuer_down_keeps_serving_the_cached_keys(issuer: LocalIssuer, clock: FakeClock) -> None:
    cache, verifier = await loaded(issuer, clock)
    token = issuer.mint(issuer.claims())
    issuer.down()
    clock.advance(MAX_AGE)
    await cache.tick()  # the max-age refresh fails: connection refused
    assert cache.failures == 1
    assert (await verifier.authenticate(bearer(token))).subject == "user-1"
    unknown = jwt_keys.mint(jwt_keys.generate_rsa_keys(), issuer.claims(), kid="nobody")
    assert (await refused(verifier, unknown)).status == 401  # still a 401, not a 5xx, with the issuer down
    health = await cache.health()
    assert health["ok"] and health["stale"]
    assert "ConnectError" in health["last_error"]
    # Retries come at the minimum interval, not sooner.
    assert await cache.tick() == pytest.approx(MIN_REFRESH)
    assert cache.fetches == 2
    issuer.up()
    clock.advance(MIN_REFRESH)
    await cache.tick()
    health = await cache.health()
    assert health["ok"] and not health["stale"] and "last_error" not in health
    assert issuer.count(DISCOVERY_PATH) == 2  # after a failure the discovery document is read again


async def test_issuer_down_at_start_is_unready_then_recovers(clock: FakeClock) -> None:
    issuer = LocalIssuer()  # not serving yet: its port refuses
    cache = make_cache(issuer, clock)
    verifier = verifier_for(cache, issuer)
    assert await cache.tick() == pytest.approx(MIN_REFRESH)
    health = await cache.health()
    assert not health["ok"] and "ConnectError" in health["error"]
    error = await refused(verifier, jwt_keys.mint(jwt_keys.generate_rsa_keys(), issuer.claims(), kid="k"))
    assert (error.status, error.error) == (503, "auth_unavailable")
    assert cache.fetches == 1  # the request did not fetch again inside the interval
    with issuer:
        clock.advance(MIN_REFRESH)
        await cache.tick()
        assert (await cache.health())["ok"]
        assert (await verifier.authenticate(bearer(issuer.mint(issuer.claims())))).subject == "user-1"


async def test_max_age_refreshes_keys_and_discovery(issuer: LocalIssuer, clock: FakeClock) -> None:
    cache, _ = await loaded(issuer, clock)
    assert await cache.tick() == pytest.approx(MAX_AGE)
    clock.advance(MAX_AGE - 1)
    assert await cache.tick() == pytest.approx(1)
    assert issuer.count(JWKS_PATH) == 1
    clock.advance(1)
    assert await cache.tick() == pytest.approx(MAX_AGE)
    assert (issuer.count(DISCOVERY_PATH), issuer.count(JWKS_PATH)) == (2, 2)
    clock.advance(MIN_REFRESH)  # an unknown-kid refresh reads the JWKS only
    await cache.refresh()
    assert (issuer.count(DISCOVERY_PATH), issuer.count(JWKS_PATH)) == (2, 3)


async def test_background_task_loads_and_stops(issuer: LocalIssuer) -> None:
    cache = JWKSCache(issuer.url, min_refresh_s=1.0)
    cache.start()
    try:
        for _ in range(100):
            if cache.loaded:
                break
            await asyncio.sleep(0.05)
        assert cache.loaded
    finally:
        await cache.stop()
    assert issuer.count(JWKS_PATH) == 1


# --- the verifier's rules still hold --------------------------------------------------------------------------


def _rules(issuer: LocalIssuer) -> list[tuple[str, str, str]]:
    kid = issuer.current
    pair = issuer.keys[kid]
    attacker = jwt_keys.generate_rsa_keys()
    claims = issuer.claims()
    return [
        ("alg-none-with-known-kid", _with_kid(jwt_keys.forge_unsigned(claims), kid), "algorithm not allowed"),
        ("hs256-keyed-with-public-pem", _with_kid(jwt_keys.forge_hs256(claims, pair.public_pem), kid),
         "algorithm not allowed"),
        ("rs512-not-configured", issuer.mint(claims, alg="RS512"), "algorithm not allowed"),
        ("wrong-iss", issuer.mint(issuer.claims(issuer="https://elsewhere.example")), "issuer is not accepted"),
        ("iss-of-pem-config", issuer.mint(issuer.claims(issuer=jwt_keys.ISSUER)), "issuer is not accepted"),
        ("wrong-aud", issuer.mint(issuer.claims(audience="other-api")), "audience is not accepted"),
        ("expired", issuer.mint(issuer.claims(lifetime=-3600)), "expired"),
        ("missing-tenant", issuer.mint(issuer.claims(tenant=None)), "tenant claim"),
        ("tampered", jwt_keys.tamper_payload(issuer.mint(claims), tenant="other"), "signature is invalid"),
        ("other-key-same-kid", jwt_keys.mint(jwt_keys.generate_rsa_keys(), claims, kid=kid), "signature is invalid"),
        # The key comes from the issuer's JWKS only, never from the token's own headers.
        ("embedded-jwk-header", jwt.encode({"alg": "RS256", "kid": kid, "jwk": attacker.public_jwk()}, claims,
                                           attacker.jwk()), "token is malformed"),
        ("jku-header", jwt.encode({"alg": "RS256", "kid": kid, "jku": "https://attacker.example/jwks"}, claims,
                                  attacker.jwk()), "signature is invalid"),
    ]


def _with_kid(token: str, kid: str) -> str:
    import base64

    head, rest = token.split(".", 1)
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    header["kid"] = kid
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return f"{encoded}.{rest}"


async def test_claim_and_algorithm_rules_still_hold(issuer: LocalIssuer, clock: FakeClock) -> None:
    _, verifier = await loaded(issuer, clock)
    cases = _rules(issuer)
    for name, token, expected in cases:
        error = await refused(verifier, token)
        assert error.status == 401, name
        assert expected in error.detail, (name, error.detail)
        assert error.headers["WWW-Authenticate"].startswith('Bearer realm="somabrain", error="invalid_token"'), name
    assert issuer.count(JWKS_PATH) == 1  # none of them names an unknown kid
    assert len(cases) == 12


async def test_es256_issuer(clock: FakeClock) -> None:
    with LocalIssuer(keys=jwt_keys.generate_ec_keys()) as issuer:
        cache = make_cache(issuer, clock, algorithms=("ES256",))
        verifier = verifier_for(cache, issuer, algorithms=("ES256",))
        assert (await verifier.authenticate(bearer(issuer.mint(issuer.claims())))).tenant == "acme"


# --- what the cache accepts from an issuer ----------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Key size should be:UserWarning")
async def test_only_keys_that_fit_the_configured_algorithm_are_kept(issuer: LocalIssuer, clock: FakeClock) -> None:
    weak = jwt_keys.generate_rsa_keys(bits=1024)
    ec_pair = jwt_keys.generate_ec_keys()
    rsa_pair = jwt_keys.generate_rsa_keys()
    issuer.jwks_extra = [
        weak.public_jwk("weak-1024"),
        ec_pair.public_jwk("ec-key"),
        rsa_pair.public_jwk("for-encryption", use="enc"),
        rsa_pair.public_jwk("other-alg", alg="RS512"),
        {**rsa_pair.jwk().as_dict(private=True), "kid": "private", "use": "sig", "alg": "RS256"},
        {"kty": "oct", "kid": "symmetric", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "broken", "n": "AAAA", "e": "AQAB"},
        "not an object",
    ]
    cache, verifier = await loaded(issuer, clock)
    assert cache.kids == (issuer.current,)
    for kid, pair in [("weak-1024", weak), ("ec-key", ec_pair), ("for-encryption", rsa_pair),
                      ("other-alg", rsa_pair), ("private", rsa_pair), ("broken", rsa_pair)]:
        error = await refused(verifier, jwt_keys.mint(pair, issuer.claims(), kid=kid))
        assert error.status == 401, kid
    error = await refused(verifier, _with_kid(jwt_keys.forge_hs256(issuer.claims(), b"secret"), "symmetric"))
    assert (error.status, error.detail) == (401, "token signing key is not known")


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param(lambda i: i.discovery_overrides.update(issuer="https://other.example"),
                     "names issuer 'https://other.example', not SOMABRAIN_JWT_OIDC_ISSUER=", id="issuer-mismatch"),
        pytest.param(lambda i: i.discovery_overrides.update(issuer=i.url + "/"), "names issuer", id="trailing-slash"),
        pytest.param(lambda i: i.discovery_overrides.update(jwks_uri=None), '"jwks_uri" is required',
                     id="no-jwks-uri"),
        pytest.param(lambda i: i.discovery_overrides.update(jwks_uri="http://keys.example/jwks"),
                     "jwks_uri 'http://keys.example/jwks' must be an https:// URL", id="jwks-uri-plain-http"),
        pytest.param(lambda i: i.status.update({DISCOVERY_PATH: 404}), "HTTP 404", id="discovery-404"),
        pytest.param(lambda i: i.status.update({JWKS_PATH: 302}), "HTTP 302", id="jwks-redirect-not-followed"),
        pytest.param(lambda i: setattr(i, "jwks_body", b"<html>"), "/jwks: not JSON", id="jwks-not-json"),
        pytest.param(lambda i: setattr(i, "jwks_body", b'{"keys": {}}'), "not a JWK Set", id="jwks-not-a-set"),
        pytest.param(lambda i: setattr(i, "jwks_body", b" " * (MAX_DOCUMENT_BYTES + 1)), "larger than",
                     id="jwks-too-large"),
        pytest.param(lambda i: setattr(i, "jwks_body", json.dumps({"keys": [{"kty": "RSA"}] * 101}).encode()),
                     "more than 100", id="jwks-too-many-keys"),
        pytest.param(lambda i: setattr(i, "jwks_body", b'{"keys": []}'), "no key usable with RS256",
                     id="jwks-empty"),
    ],
)
async def test_unusable_issuer_answers_are_failed_fetches(
    issuer: LocalIssuer, clock: FakeClock, setup: object, expected: str
) -> None:
    setup(issuer)  # type: ignore[operator]
    cache = make_cache(issuer, clock)
    await cache.tick()
    health = await cache.health()
    assert not health["ok"]
    assert expected in health["error"], health["error"]


async def test_a_bad_key_set_later_keeps_the_cached_keys(issuer: LocalIssuer, clock: FakeClock) -> None:
    cache, verifier = await loaded(issuer, clock)
    issuer.jwks_body = b'{"keys": []}'
    clock.advance(MAX_AGE)
    await cache.tick()
    assert cache.failures == 1 and cache.loaded
    assert (await verifier.authenticate(bearer(issuer.mint(issuer.claims())))).subject == "user-1"


async def test_tls_issuer_with_its_ca_file(tmp_path: Path, clock: FakeClock) -> None:
    tls = make_tls(tmp_path / "tls")
    with LocalIssuer(tls=tls) as issuer:
        assert issuer.url.startswith("https://127.0.0.1:")
        cache = make_cache(issuer, clock, ca_file=str(tls.ca))
        verifier = verifier_for(cache, issuer)
        assert (await verifier.authenticate(bearer(issuer.mint(issuer.claims())))).subject == "user-1"
        untrusted = make_cache(issuer, clock)  # the system's trust store does not know the test CA
        await untrusted.tick()
        health = await untrusted.health()
        assert not health["ok"] and "CERTIFICATE_VERIFY_FAILED" in health["error"]


@pytest.mark.parametrize("content", [None, b"", b"not a certificate\n"])
def test_unreadable_ca_file_is_a_config_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=rf"^SOMABRAIN_JWT_OIDC_CA_FILE={path}: not a readable PEM CA bundle"):
        JWKSCache("https://issuer.example", ca_file=str(path))


def test_authlib_runs_on_httpx2_without_deprecation_warnings() -> None:
    """authlib's httpx integration is built on httpx2 (pinned for it): importing brain.oidc warns about nothing, and
    the client is an httpx2 client (so the errors brain.oidc catches are the ones it raises)."""
    code = ("import brain.oidc, httpx2; from authlib.integrations.httpx_client import AsyncOAuth2Client; "
            "assert issubclass(AsyncOAuth2Client, httpx2.AsyncClient)")
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
