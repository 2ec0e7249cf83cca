"""brain.auth: real RSA/EC keys generated per run, real signatures, a table of forged and broken tokens."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from brain.auth import TENANT_PATTERN, JWTVerifier, Principal, load_verifier
from brain.errors import APIError, ConfigError
from tests.helpers.jwt_keys import (
    AUDIENCE,
    ISSUER,
    KeyPair,
    forge_hs256,
    forge_unsigned,
    generate_ec_keys,
    generate_rsa_keys,
    mint,
    sign_raw_payload,
    standard_claims,
    tamper_payload,
)

NOW = 1_900_000_000  # fixed clock for the verifier: no test depends on wall-clock timing
LEEWAY = 30
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    return generate_rsa_keys()


@pytest.fixture(scope="module")
def other_keys() -> KeyPair:
    return generate_rsa_keys()


@pytest.fixture(scope="module")
def ec_keys() -> KeyPair:
    return generate_ec_keys()


@pytest.fixture(scope="module")
def verifier(keys: KeyPair) -> JWTVerifier:
    return JWTVerifier(keys.public_pem, issuer=ISSUER, audience=AUDIENCE, leeway=LEEWAY, clock=lambda: NOW)


def claims(**overrides: object) -> dict[str, object]:
    base = standard_claims(now=NOW, lifetime=600)
    for key, value in overrides.items():
        if value is DROP:
            base.pop(key, None)
        else:
            base[key] = value
    return base


DROP = object()


# --- valid tokens -------------------------------------------------------------------------------------------


def test_valid_token_gives_principal(keys: KeyPair, verifier: JWTVerifier) -> None:
    token = mint(keys, claims(roles=["reader", "writer", "reader"]))
    assert verifier.verify(f"Bearer {token}") == Principal("user-1", "acme", ("reader", "writer"))


@pytest.mark.parametrize(
    ("overrides", "expected_roles"),
    [
        pytest.param({"aud": ["other-api", AUDIENCE]}, ("reader", "writer"), id="aud-list-contains-audience"),
        pytest.param({"roles": "reader actor"}, ("reader", "actor"), id="roles-space-separated"),
        pytest.param({"roles": DROP}, (), id="no-roles-claim-means-no-roles"),
        pytest.param({"nbf": DROP}, ("reader", "writer"), id="nbf-optional"),
        pytest.param({"exp": NOW - LEEWAY + 5}, ("reader", "writer"), id="expired-within-leeway"),
        pytest.param({"nbf": NOW + LEEWAY - 5}, ("reader", "writer"), id="nbf-within-leeway"),
    ],
)
def test_valid_variants(
    keys: KeyPair, verifier: JWTVerifier, overrides: dict[str, object], expected_roles: tuple[str, ...]
) -> None:
    principal = verifier.verify(f"Bearer {mint(keys, claims(**overrides))}")
    assert principal.tenant == "acme"
    assert principal.roles == expected_roles


def test_scheme_is_case_insensitive(keys: KeyPair, verifier: JWTVerifier) -> None:
    assert verifier.verify(f"bearer {mint(keys, claims())}").subject == "user-1"


def test_es256_key_and_token(ec_keys: KeyPair) -> None:
    v = JWTVerifier(ec_keys.public_pem, algorithms=["ES256"], issuer=ISSUER, audience=AUDIENCE, clock=lambda: NOW)
    assert v.verify(f"Bearer {mint(ec_keys, claims())}").tenant == "acme"


@pytest.mark.parametrize("claim_name", ["https://somabrain.example/tenant", "org.tenant"])
def test_custom_tenant_claim(keys: KeyPair, claim_name: str) -> None:
    v = JWTVerifier(keys.public_pem, issuer=ISSUER, audience=AUDIENCE, tenant_claim=claim_name, clock=lambda: NOW)
    body = claims(tenant=DROP)
    if claim_name == "org.tenant":
        body["org"] = {"tenant": "beta"}
    else:
        body[claim_name] = "beta"
    assert v.verify(f"Bearer {mint(keys, body)}").tenant == "beta"


def test_certificate_instead_of_bare_key(keys: KeyPair, tmp_path: Path) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer.test")])
    start = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(keys.private_key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .sign(keys.private_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    path = tmp_path / "issuer.crt"
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    v = load_verifier(path, issuer=ISSUER, audience=AUDIENCE)
    assert v.verify(f"Bearer {mint(keys, standard_claims())}").subject == "user-1"


# --- bad tokens: every one must be refused with 401 ---------------------------------------------------------

TokenMaker = Callable[[KeyPair, KeyPair, KeyPair], str]


def _flip_signature(token: str) -> str:
    head, payload, sig = token.split(".")
    flipped = ("A" if sig[10] != "A" else "B").join((sig[:10], sig[11:]))
    return f"{head}.{payload}.{flipped}"


BAD_TOKENS: list[tuple[str, TokenMaker, str]] = [
    ("alg-none", lambda k, o, e: forge_unsigned(claims()), "algorithm not allowed"),
    ("alg-None-mixed-case", lambda k, o, e: forge_unsigned(claims(), alg="None"), "algorithm not allowed"),
    ("alg-none-with-signature", lambda k, o, e: forge_unsigned(claims()) + "c2ln", "algorithm not allowed"),
    ("hs256-keyed-with-public-pem", lambda k, o, e: forge_hs256(claims(), k.public_pem), "algorithm not allowed"),
    (
        "hs256-keyed-with-public-pem-stripped",
        lambda k, o, e: forge_hs256(claims(), k.public_pem.strip()),
        "algorithm not allowed",
    ),
    ("rs512-not-configured", lambda k, o, e: mint(k, claims(), alg="RS512"), "algorithm not allowed"),
    ("es256-not-configured", lambda k, o, e: mint(e, claims()), "algorithm not allowed"),
    ("signed-by-another-key", lambda k, o, e: mint(o, claims()), "signature is invalid"),
    ("expired", lambda k, o, e: mint(k, claims(exp=NOW - 3600)), "expired"),
    ("expired-just-beyond-leeway", lambda k, o, e: mint(k, claims(exp=NOW - LEEWAY - 1)), "expired"),
    ("future-nbf", lambda k, o, e: mint(k, claims(nbf=NOW + 3600)), "not valid yet"),
    ("nbf-just-beyond-leeway", lambda k, o, e: mint(k, claims(nbf=NOW + LEEWAY + 1)), "not valid yet"),
    ("missing-exp", lambda k, o, e: mint(k, claims(exp=DROP)), "required claim"),
    ("wrong-iss", lambda k, o, e: mint(k, claims(iss="https://evil.example")), "issuer"),
    ("iss-not-a-string", lambda k, o, e: mint(k, claims(iss=[ISSUER])), "issuer"),
    ("missing-iss", lambda k, o, e: mint(k, claims(iss=DROP)), "required claim"),
    ("wrong-aud", lambda k, o, e: mint(k, claims(aud="other-api")), "audience"),
    ("aud-list-without-audience", lambda k, o, e: mint(k, claims(aud=["a", "b"])), "audience"),
    ("missing-aud", lambda k, o, e: mint(k, claims(aud=DROP)), "required claim"),
    ("missing-sub", lambda k, o, e: mint(k, claims(sub=DROP)), "required claim"),
    ("blank-sub", lambda k, o, e: mint(k, claims(sub="   ")), "'sub'"),
    ("missing-tenant-claim", lambda k, o, e: mint(k, claims(tenant=DROP)), "tenant claim"),
    ("tenant-path-traversal", lambda k, o, e: mint(k, claims(tenant="../other")), "valid tenant"),
    ("tenant-not-a-string", lambda k, o, e: mint(k, claims(tenant=["acme"])), "valid tenant"),
    ("roles-not-a-list", lambda k, o, e: mint(k, claims(roles={"admin": True})), "list of role names"),
    ("tampered-payload-tenant", lambda k, o, e: tamper_payload(mint(k, claims()), tenant="beta"), "signature"),
    ("tampered-payload-roles", lambda k, o, e: tamper_payload(mint(k, claims()), roles=["admin"]), "signature"),
    ("tampered-signature", lambda k, o, e: _flip_signature(mint(k, claims())), "signature"),
    ("garbage", lambda k, o, e: "not-a-jwt", "malformed"),
    ("garbage-three-segments", lambda k, o, e: "a.b.c", "malformed"),
    (
        "payload-not-json-unsigned",
        lambda k, o, e: mint(k, claims()).split(".")[0] + ".bm90LWpzb24.c2ln",
        "signature",
    ),
    ("payload-not-json-signed", lambda k, o, e: sign_raw_payload(k, b"not json"), "malformed"),
    ("payload-json-array-signed", lambda k, o, e: sign_raw_payload(k, b'["sub"]'), "malformed"),
    ("jwe-shaped", lambda k, o, e: "a.b.c.d.e", "malformed"),
    ("non-ascii", lambda k, o, e: "é.é.é", "malformed"),
    ("oversized", lambda k, o, e: mint(k, claims(pad="x" * 9000)), "too large"),
]


@pytest.mark.parametrize(("maker", "expected"), [(m, x) for _, m, x in BAD_TOKENS], ids=[n for n, _, _ in BAD_TOKENS])
def test_bad_token_refused(
    keys: KeyPair,
    other_keys: KeyPair,
    ec_keys: KeyPair,
    verifier: JWTVerifier,
    maker: TokenMaker,
    expected: str,
) -> None:
    token = maker(keys, other_keys, ec_keys)
    with pytest.raises(APIError) as caught:
        verifier.verify(f"Bearer {token}")
    error = caught.value
    assert (error.status, error.error) == (401, "unauthorized")
    assert expected in error.detail
    challenge = error.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="somabrain", error="invalid_token", error_description="')
    rendered = json.dumps({"detail": error.detail, "headers": error.headers})
    leak_probes = [part for part in (token, *token.split(".")) if len(part) >= 8]
    for secret_part in (*leak_probes, "BEGIN", keys.public_pem.decode()[30:60]):
        assert secret_part not in rendered


def test_bad_token_table_size() -> None:
    """The lead reports this count; it also guards the table from silently shrinking."""
    assert len(BAD_TOKENS) == 36
    assert len({name for name, _, _ in BAD_TOKENS}) == len(BAD_TOKENS)


@pytest.mark.parametrize(
    ("header", "error_code"),
    [
        pytest.param(None, None, id="missing-header"),
        pytest.param("", None, id="empty-header"),
        pytest.param("Basic dXNlcjpwYXNz", "invalid_request", id="basic-scheme"),
        pytest.param("Token abc.def.ghi", "invalid_request", id="other-scheme"),
        pytest.param("Bearer", "invalid_request", id="bearer-without-token"),
        pytest.param("Bearer a.b.c extra", "invalid_request", id="bearer-two-tokens"),
        pytest.param("Bearer  a.b.c", "invalid_request", id="double-space"),
    ],
)
def test_bad_authorization_header(verifier: JWTVerifier, header: str | None, error_code: str | None) -> None:
    with pytest.raises(APIError) as caught:
        verifier.verify(header)
    assert caught.value.status == 401
    challenge = caught.value.headers["WWW-Authenticate"]
    if error_code is None:
        assert challenge == 'Bearer realm="somabrain"'
    else:
        assert f'error="{error_code}"' in challenge


def test_header_tenant_cannot_override_claim(keys: KeyPair, verifier: JWTVerifier) -> None:
    """verify() only reads the Authorization value; the tenant is the claim's, whatever else the client sends."""
    principal = verifier.verify(f"Bearer {mint(keys, claims(tenant='acme'))}")
    assert principal.tenant == "acme"


# --- configuration errors ------------------------------------------------------------------------------------


def test_missing_key_file_is_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError) as caught:
        load_verifier(missing, issuer=ISSUER, audience=AUDIENCE)
    assert str(caught.value) == (
        f"SOMABRAIN_JWT_PUBLIC_KEY_PATH={missing}: cannot read key file (No such file or directory)"
    )


def test_unreadable_key_path_is_config_error(tmp_path: Path, keys: KeyPair) -> None:
    parent = keys.write_public_pem(tmp_path / "jwt.pub")
    with pytest.raises(ConfigError, match=r"cannot read key file \(Not a directory\)"):
        load_verifier(parent / "child.pem", issuer=ISSUER, audience=AUDIENCE)


def test_empty_key_directory_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"the directory holds no \*\.pem public keys"):
        load_verifier(tmp_path, issuer=ISSUER, audience=AUDIENCE)


def test_key_directory_is_a_key_set_for_rotation(tmp_path: Path, keys: KeyPair) -> None:
    """During a signing-key rotation both keys verify; once the old one is removed, its tokens are refused."""
    new = generate_rsa_keys()
    keys.write_public_pem(tmp_path / "2026-old.pem")
    new.write_public_pem(tmp_path / "2026-new.pem")
    both = load_verifier(tmp_path, issuer=ISSUER, audience=AUDIENCE)
    for pair in (keys, new):
        assert both.verify(f"Bearer {mint(pair, standard_claims())}").tenant == "acme"
    (tmp_path / "2026-old.pem").unlink()
    only_new = load_verifier(tmp_path, issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(APIError) as refused:
        only_new.verify(f"Bearer {mint(keys, standard_claims())}")
    assert refused.value.status == 401
    assert only_new.verify(f"Bearer {mint(new, standard_claims())}").subject == "user-1"


def test_empty_path_is_config_error() -> None:
    with pytest.raises(ConfigError, match="SOMABRAIN_JWT_PUBLIC_KEY_PATH: must be set"):
        load_verifier("", issuer=ISSUER, audience=AUDIENCE)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"", "key file is empty", id="empty"),
        pytest.param(b"hello, not a key\n", "not a PEM public key", id="garbage"),
        pytest.param(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a PEM", id="bad-pem"),
    ],
)
def test_non_key_files_are_config_errors(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_verifier(path, issuer=ISSUER, audience=AUDIENCE)
    assert str(caught.value).startswith(f"SOMABRAIN_JWT_PUBLIC_KEY_PATH={path}: ")
    assert expected in str(caught.value)
    assert "hello" not in str(caught.value) and "AAAA" not in str(caught.value)


def test_private_key_file_refused_without_echo(tmp_path: Path, keys: KeyPair) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(keys.private_pem)
    with pytest.raises(ConfigError, match="PRIVATE key") as caught:
        load_verifier(path, issuer=ISSUER, audience=AUDIENCE)
    assert keys.private_pem.decode().splitlines()[1][:20] not in str(caught.value)


def test_weak_rsa_key_refused(tmp_path: Path) -> None:
    weak = generate_rsa_keys(bits=1024)
    with pytest.raises(ConfigError, match="1024-bit RSA key"):
        load_verifier(weak.write_public_pem(tmp_path / "weak.pub"), issuer=ISSUER, audience=AUDIENCE)


def test_key_type_must_fit_algorithms(tmp_path: Path, ec_keys: KeyPair, keys: KeyPair) -> None:
    with pytest.raises(ConfigError, match="EC secp256r1 key, which does not fit RS256"):
        load_verifier(ec_keys.write_public_pem(tmp_path / "ec.pub"), issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(ConfigError, match="RSA key but the algorithms include ES256"):
        JWTVerifier(keys.public_pem, algorithms=["ES256"], issuer=ISSUER, audience=AUDIENCE)


@pytest.mark.parametrize("algorithms", [["HS256"], ["RS256", "HS256"], ["none"], []])
def test_symmetric_or_none_algorithms_refused_at_config(keys: KeyPair, algorithms: list[str]) -> None:
    with pytest.raises(ConfigError, match="algorithm"):
        JWTVerifier(keys.public_pem, algorithms=algorithms, issuer=ISSUER, audience=AUDIENCE)


@pytest.mark.parametrize(
    ("issuer", "audience", "variable"),
    [("", AUDIENCE, "SOMABRAIN_JWT_ISSUER"), (ISSUER, " ", "SOMABRAIN_JWT_AUDIENCE")],
)
def test_issuer_and_audience_required(keys: KeyPair, issuer: str, audience: str, variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        JWTVerifier(keys.public_pem, issuer=issuer, audience=audience)


def test_load_verifier_round_trip(tmp_path: Path, keys: KeyPair) -> None:
    v = load_verifier(keys.write_public_pem(tmp_path / "jwt.pub"), issuer=ISSUER, audience=AUDIENCE)
    assert v.verify(f"Bearer {mint(keys, standard_claims(tenant='t-1'))}").tenant == "t-1"


def test_tenant_pattern_matches_the_policy() -> None:
    rego = (REPO / "k8s" / "policy" / "somabrain.rego").read_text()
    assert f"`^{TENANT_PATTERN.pattern}$`" in rego
