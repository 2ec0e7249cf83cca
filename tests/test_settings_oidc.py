"""brain.settings: the JWT key settings, PEM files or an OIDC issuer (SOMABRAIN_JWT_OIDC_*, SOMABRAIN_JWT_JWKS_*).

The OIDC settings are checked without contacting anyone: no issuer runs in this module.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from brain.api.state import load_jwt_verifier, preflight
from brain.errors import ConfigError
from brain.oidc import JWKSCache
from brain.settings import Settings

ISSUER_URL = "https://idp.example/realms/soma"
BASE = {
    "SOMABRAIN_REDIS_URL": "redis://localhost",
    "SOMABRAIN_DISABLE_AUTH": "0",
    "SOMABRAIN_JWT_AUDIENCE": "somabrain-api",
    "SOMABRAIN_OPA_URL": "http://sb_opa:8181",
}
OIDC = {**BASE, "SOMABRAIN_JWT_OIDC_ISSUER": ISSUER_URL}


def test_oidc_issuer_instead_of_a_key_path() -> None:
    settings = Settings.from_env(OIDC)
    assert settings.jwt_oidc_issuer == ISSUER_URL and settings.jwt_public_key_path is None
    assert settings.jwt_expected_issuer == ISSUER_URL  # SOMABRAIN_JWT_ISSUER may be left out
    assert (settings.jwt_jwks_min_refresh_s, settings.jwt_jwks_max_age_s, settings.jwt_oidc_ca_file) == (30, 3600, None)
    same = Settings.from_env({**OIDC, "SOMABRAIN_JWT_ISSUER": ISSUER_URL, "SOMABRAIN_ENV": "prod"})
    assert same.jwt_expected_issuer == ISSUER_URL and not same.disable_auth


def test_verifier_for_an_oidc_issuer_contacts_nobody() -> None:
    """Construction (what the CLI's preflight does) only checks settings: the issuer here does not even exist."""
    settings = Settings.from_env({**OIDC, "SOMABRAIN_JWT_JWKS_MIN_REFRESH": "5", "SOMABRAIN_JWT_JWKS_MAX_AGE": "600"})
    verifier = load_jwt_verifier(settings)
    assert verifier is not None and isinstance(verifier.keys, JWKSCache)
    assert (verifier.keys.issuer, verifier.keys.min_refresh_s, verifier.keys.max_age_s) == (ISSUER_URL, 5, 600)
    assert verifier.issuer == ISSUER_URL and verifier.algorithms == ("RS256",)
    assert not verifier.keys.loaded and verifier.keys.fetches == 0
    preflight(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        pytest.param({**OIDC, "SOMABRAIN_JWT_PUBLIC_KEY_PATH": "/secrets"},
                     r"^SOMABRAIN_JWT_PUBLIC_KEY_PATH and SOMABRAIN_JWT_OIDC_ISSUER are both set; keep one", id="both"),
        pytest.param(BASE, r"^SOMABRAIN_JWT_PUBLIC_KEY_PATH is not set \(auth is on: SOMABRAIN_DISABLE_AUTH=0\); .*"
                     r"or set SOMABRAIN_JWT_OIDC_ISSUER to the URL of an OpenID Connect issuer", id="neither"),
        pytest.param({**OIDC, "SOMABRAIN_JWT_ISSUER": "https://idp.example/realms/other"},
                     r"^SOMABRAIN_JWT_ISSUER='https://idp.example/realms/other' differs from "
                     r"SOMABRAIN_JWT_OIDC_ISSUER='https://idp.example/realms/soma'", id="iss-differs"),
        pytest.param({**OIDC, "SOMABRAIN_JWT_ISSUER": ISSUER_URL + "/"}, r"^SOMABRAIN_JWT_ISSUER=.* differs from",
                     id="iss-trailing-slash"),
        pytest.param({k: v for k, v in OIDC.items() if k != "SOMABRAIN_JWT_AUDIENCE"},
                     r"^SOMABRAIN_JWT_AUDIENCE is not set \(auth is on", id="no-audience"),
        pytest.param({**OIDC, "SOMABRAIN_JWT_OIDC_ISSUER": "http://idp.example"},
                     r"^SOMABRAIN_JWT_OIDC_ISSUER='http://idp.example': must be an https:// URL \(plain http:// only "
                     r"to a loopback address", id="plain-http"),
        pytest.param({**OIDC, "SOMABRAIN_JWT_OIDC_ISSUER": "http://10.0.0.5:8080"}, r"must be an https:// URL",
                     id="plain-http-private-address"),
        pytest.param({**OIDC, "SOMABRAIN_JWT_OIDC_ISSUER": "ftp://idp.example"}, r"must be an https:// URL",
                     id="other-scheme"),
        pytest.param({**OIDC, "SOMABRAIN_JWT_OIDC_ISSUER": "https://idp.example/realms/soma?x=1"},
                     r"an issuer identifier has no query or fragment", id="query"),
        pytest.param({**OIDC, "SOMABRAIN_JWT_OIDC_ISSUER": "https://idp.example/#frag"},
                     r"an issuer identifier has no query or fragment", id="fragment"),
        pytest.param({**OIDC, "SOMABRAIN_JWT_OIDC_ISSUER": "https://user:pw@idp.example"},
                     r"^SOMABRAIN_JWT_OIDC_ISSUER='https://user:\*\*\*@idp.example': must not carry credentials",
                     id="credentials-redacted"),
        pytest.param({**OIDC, "SOMABRAIN_JWT_OIDC_ISSUER": "https://idp.example:99999"}, r"malformed URL",
                     id="bad-port"),
        pytest.param({**OIDC, "SOMABRAIN_JWT_OIDC_ISSUER": "https://"}, r"malformed URL \(no host\)", id="no-host"),
        pytest.param({**OIDC, "SOMABRAIN_JWT_OIDC_ISSUER": "http://127.0.0.1:8080",
                      "SOMABRAIN_JWT_OIDC_CA_FILE": "/ca"},
                     r"^SOMABRAIN_JWT_OIDC_CA_FILE is set but SOMABRAIN_JWT_OIDC_ISSUER='http://127.0.0.1:8080' uses "
                     r"no TLS", id="ca-file-without-tls"),
        pytest.param({**OIDC, "SOMABRAIN_JWT_JWKS_MIN_REFRESH": "600", "SOMABRAIN_JWT_JWKS_MAX_AGE": "300"},
                     r"^SOMABRAIN_JWT_JWKS_MAX_AGE=300 is below SOMABRAIN_JWT_JWKS_MIN_REFRESH=600",
                     id="age-below-min"),
        pytest.param({**OIDC, "SOMABRAIN_JWT_JWKS_MIN_REFRESH": "0"},
                     r"^SOMABRAIN_JWT_JWKS_MIN_REFRESH=0.0: must be between 1.0 and 3600.0", id="min-refresh-zero"),
        pytest.param({**OIDC, "SOMABRAIN_JWT_JWKS_MAX_AGE": "soon"},
                     r"^SOMABRAIN_JWT_JWKS_MAX_AGE='soon': expected a number", id="max-age-not-a-number"),
    ],
)
def test_bad_jwt_key_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize("name", ["JWT_OIDC_CA_FILE", "JWT_JWKS_MIN_REFRESH", "JWT_JWKS_MAX_AGE"])
@pytest.mark.parametrize("auth", ["0", "1"])
def test_oidc_only_settings_without_an_issuer_are_refused(name: str, auth: str) -> None:
    """Like the Kafka settings: a setting nothing would read looks like protection that is not there."""
    env = {**BASE, "SOMABRAIN_JWT_PUBLIC_KEY_PATH": "/secrets", "SOMABRAIN_JWT_ISSUER": "i",
           "SOMABRAIN_DISABLE_AUTH": auth, f"SOMABRAIN_{name}": "60"}
    with pytest.raises(ConfigError, match=rf"^SOMABRAIN_{name} is set but SOMABRAIN_JWT_OIDC_ISSUER is not"):
        Settings.from_env(env)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://127.0.0.53", "http://localhost:9000/realms/dev", "http://[::1]:8080",
            "https://idp.example", "https://idp.example:8443/realms/soma/"],
)
def test_accepted_issuer_urls(url: str) -> None:
    assert Settings.from_env({**OIDC, "SOMABRAIN_JWT_OIDC_ISSUER": url}).jwt_oidc_issuer == url


def test_pem_settings_unchanged() -> None:
    """The PEM path still needs its issuer; nothing OIDC is set or fetched."""
    pem = {**BASE, "SOMABRAIN_JWT_PUBLIC_KEY_PATH": "/secrets"}
    with pytest.raises(ConfigError, match=r"^SOMABRAIN_JWT_ISSUER is not set \(auth is on"):
        Settings.from_env(pem)
    settings = Settings.from_env({**pem, "SOMABRAIN_JWT_ISSUER": "https://issuer.test"})
    assert settings.jwt_oidc_issuer is None and settings.jwt_expected_issuer == "https://issuer.test"


def test_disabled_auth_ignores_an_issuer_but_still_checks_its_url() -> None:
    dev = {"SOMABRAIN_REDIS_URL": "redis://localhost", "SOMABRAIN_JWT_OIDC_ISSUER": ISSUER_URL}
    assert load_jwt_verifier(Settings.from_env(dev)) is None
    with pytest.raises(ConfigError, match="SOMABRAIN_JWT_OIDC_ISSUER"):
        Settings.from_env({**dev, "SOMABRAIN_JWT_OIDC_ISSUER": "http://idp.example"})


def test_unreadable_ca_file_fails_the_preflight(tmp_path: Path) -> None:
    missing = tmp_path / "missing-ca.pem"
    settings = Settings.from_env({**OIDC, "SOMABRAIN_JWT_OIDC_CA_FILE": str(missing)})
    with pytest.raises(ConfigError, match=rf"^SOMABRAIN_JWT_OIDC_CA_FILE={missing}: not a readable PEM CA bundle"):
        preflight(settings)
