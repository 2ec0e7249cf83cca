"""Bearer tokens for environments with auth on (SOMABRAIN_DISABLE_AUTH=0).

The issuer, audience and tenant claim come from what the API workload declares (its environment), so the
token is the one that environment accepts; the signing key is the deployment's own private key (kind dev loop:
.run/jwt/jwt_priv.pem from scripts/dev_up.sh --kind-secrets). Nothing here imports the service.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from joserfc import jwt
from joserfc.jwk import RSAKey


class AuthSetupError(Exception):
    """The API needs a token and none can be made; the message says what to pass."""


def auth_enabled(env: Mapping[str, str]) -> bool:
    return env.get("SOMABRAIN_DISABLE_AUTH", "0").strip().lower() not in ("1", "true", "yes", "on")


def mint_token(private_key: Path, env: Mapping[str, str], tenant: str, roles: Sequence[str],
               lifetime: int = 3600) -> str:
    """An RS256 token with iss/aud from the workload's SOMABRAIN_JWT_ISSUER/AUDIENCE."""
    missing = [v for v in ("SOMABRAIN_JWT_ISSUER", "SOMABRAIN_JWT_AUDIENCE") if not env.get(v)]
    if missing:
        raise AuthSetupError(f"auth is on but the API workload declares no {', '.join(missing)}")
    try:
        key = RSAKey.import_key(private_key.read_bytes())
    except OSError as exc:
        raise AuthSetupError(f"cannot read the JWT private key {private_key}: {exc}") from exc
    except ValueError as exc:
        raise AuthSetupError(f"{private_key} is not an RSA private key in PEM: {exc}") from exc
    now = int(time.time())
    claims = {
        "iss": env["SOMABRAIN_JWT_ISSUER"],
        "aud": env["SOMABRAIN_JWT_AUDIENCE"],
        "sub": "conformance-suite",
        env.get("SOMABRAIN_JWT_TENANT_CLAIM") or "tenant": tenant,
        "roles": list(roles),
        "iat": now,
        "nbf": now - 5,
        "exp": now + lifetime,
    }
    return jwt.encode({"alg": "RS256", "typ": "JWT"}, claims, key)
