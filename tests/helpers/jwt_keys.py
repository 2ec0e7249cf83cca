"""Mint real and forged JWTs for tests. Keys are generated at test time, never committed.

    keys = generate_rsa_keys()                 # KeyPair with .private_key, .public_pem (bytes)
    keys.write_public_pem(tmp_path / "jwt.pub")  # for SOMABRAIN_JWT_PUBLIC_KEY_PATH
    claims = standard_claims(issuer=ISSUER, audience=AUDIENCE, tenant="acme", roles=["reader"])
    token = mint(keys, claims)                  # RS256 (or keys' default alg) signed with the private key
    token = mint(keys, claims, kid="2026-05")   # the same, with a `kid` header (for keys served as a JWKS)
    keys.public_jwk(kid="2026-05")              # the public half as a JWK dict, for a JWKS document
    headers = {"Authorization": f"Bearer {token}"}

Forgeries for negative tests: `forge_unsigned` (alg=none), `forge_hs256` (HMAC keyed with e.g. the public PEM:
the classic RS/HS key-confusion attack) and `tamper_payload` (change claims, keep the original signature).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

ISSUER = "https://issuer.test.somabrain"
AUDIENCE = "somabrain-api"


@dataclass(frozen=True)
class KeyPair:
    private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    alg: str

    @property
    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def private_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def write_public_pem(self, path: Path) -> Path:
        path.write_bytes(self.public_pem)
        return path

    def jwk(self) -> RSAKey | ECKey:
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            return RSAKey.import_key(self.private_pem)
        return ECKey.import_key(self.private_pem)

    def public_jwk(self, kid: str | None = None, **members: Any) -> dict[str, Any]:
        """The public key as a JWK (no private member), with `kid`, `use: sig` and `alg` unless overridden."""
        jwk: dict[str, Any] = dict(self.jwk().as_dict(private=False))
        jwk.pop("kid", None)
        if kid is not None:
            jwk["kid"] = kid
        jwk.update({"use": "sig", "alg": self.alg})
        jwk.update(members)
        return {k: v for k, v in jwk.items() if v is not None}


def generate_rsa_keys(bits: int = 2048) -> KeyPair:
    return KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=bits), "RS256")


def generate_ec_keys() -> KeyPair:
    return KeyPair(ec.generate_private_key(ec.SECP256R1()), "ES256")


def standard_claims(
    *,
    issuer: str = ISSUER,
    audience: str | Sequence[str] = AUDIENCE,
    tenant: str | None = "acme",
    subject: str = "user-1",
    roles: Sequence[str] | None = ("reader", "writer"),
    lifetime: int = 600,
    now: float | None = None,
    tenant_claim: str = "tenant",
    **extra: Any,
) -> dict[str, Any]:
    """Claims of a valid token; pass tenant=None / roles=None to leave those claims out."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience if isinstance(audience, str) else list(audience),
        "sub": subject,
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime,
    }
    if tenant is not None:
        claims[tenant_claim] = tenant
    if roles is not None:
        claims["roles"] = list(roles)
    claims.update(extra)
    return claims


def mint(keys: KeyPair, claims: Mapping[str, Any], *, alg: str | None = None, kid: str | None = None) -> str:
    """A genuinely signed compact JWS (with a `kid` header when given)."""
    algorithm = alg or keys.alg
    header: dict[str, Any] = {"alg": algorithm, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    return jwt.encode(header, dict(claims), keys.jwk(), algorithms=[algorithm])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: Mapping[str, Any]) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


def forge_unsigned(claims: Mapping[str, Any], *, alg: str = "none") -> str:
    """`alg: none` token with an empty signature."""
    return f"{_segment({'alg': alg, 'typ': 'JWT'})}.{_segment(claims)}."


def forge_hs256(claims: Mapping[str, Any], secret: bytes) -> str:
    """HS256 token keyed with `secret` (use the RSA public PEM for the key-confusion attack)."""
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT'})}.{_segment(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def tamper_payload(token: str, **changes: Any) -> str:
    """Rewrite some claims of a signed token while keeping its original header and signature."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return f"{header}.{_segment(claims)}.{signature}"


def sign_raw_payload(keys: KeyPair, payload: bytes, *, alg: str | None = None) -> str:
    """A correctly signed JWS whose payload is arbitrary bytes (e.g. not JSON, or a JSON array)."""
    from joserfc import jws

    algorithm = alg or keys.alg
    return jws.serialize_compact({"alg": algorithm}, payload, keys.jwk(), algorithms=[algorithm])
