"""Bearer tokens minted by load/tokens.py verify as RS256 with the claims the API reads (checked with joserfc)."""

from __future__ import annotations

from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from load.tokens import TokenError, claims, load_private_key, mint
from tests.helpers.jwt_keys import AUDIENCE, ISSUER, generate_ec_keys, generate_rsa_keys


def test_minted_token_verifies_with_the_public_key(tmp_path: Path) -> None:
    keys = generate_rsa_keys()
    key_file = tmp_path / "jwt.key"
    key_file.write_bytes(keys.private_pem)
    payload = claims(issuer=ISSUER, audience=AUDIENCE, subject="load-user-3", tenant="load-03",
                     roles=("reader", "writer"), lifetime=600, now=1_800_000_000)
    token = mint(load_private_key(key_file), payload)
    decoded = jwt.decode(token, RSAKey.import_key(keys.public_pem), algorithms=["RS256"])
    assert decoded.header["alg"] == "RS256"
    assert decoded.claims == {"iss": ISSUER, "aud": AUDIENCE, "sub": "load-user-3", "tenant": "load-03",
                              "roles": ["reader", "writer"], "iat": 1_800_000_000, "nbf": 1_800_000_000,
                              "exp": 1_800_000_600}


def test_tenant_claim_name_is_configurable() -> None:
    payload = claims(issuer="i", audience="a", subject="s", tenant="t", roles=(), lifetime=1, tenant_claim="org")
    assert payload["org"] == "t" and "tenant" not in payload


def test_bad_key_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="cannot read"):
        load_private_key(tmp_path / "absent.pem")
    ec = tmp_path / "ec.pem"
    ec.write_bytes(generate_ec_keys().private_pem)
    with pytest.raises(TokenError, match="RS256 needs an RSA key"):
        load_private_key(ec)
