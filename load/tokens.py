"""RS256 bearer tokens for runs against an API with auth on, signed with a private key file.

Claims: iss, aud, sub, tenant (claim name configurable), roles, iat, nbf, exp. Signed with `cryptography` directly
(PKCS#1 v1.5 + SHA-256 = RS256), so the load package needs no JOSE library.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class TokenError(ValueError):
    pass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_private_key(path: str | Path) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise TokenError(f"JWT private key {path}: cannot read an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TokenError(f"JWT private key {path}: RS256 needs an RSA key, got {type(key).__name__}")
    return key


def claims(*, issuer: str, audience: str, subject: str, tenant: str, roles: Sequence[str], lifetime: int,
           tenant_claim: str = "tenant", now: float | None = None) -> dict[str, Any]:
    issued = int(time.time() if now is None else now)
    return {"iss": issuer, "aud": audience, "sub": subject, tenant_claim: tenant, "roles": list(roles),
            "iat": issued, "nbf": issued, "exp": issued + lifetime}


def mint(key: rsa.RSAPrivateKey, payload: dict[str, Any]) -> str:
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    signature = key.sign(f"{header}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{body}.{_b64(signature)}"
