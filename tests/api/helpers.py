"""What the API tests share besides fixtures: a tenant's request headers, and the production settings (auth on, OPA
fail-closed) built from the fixtures' environment and keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers import jwt_keys


def headers(tenant: str) -> dict[str, Any]:
    return {"X-Tenant-ID": tenant}


def auth_env(strict_env: dict[str, str], keys: jwt_keys.KeyPair, run_dir: Path, opa_url: str) -> dict[str, str]:
    """The production settings: strict, auth on with this run's public key, OPA fail-closed."""
    key_path = run_dir / "jwt_pub.pem"
    keys.write_public_pem(key_path)
    return {
        **strict_env,
        "SOMABRAIN_DISABLE_AUTH": "0",
        "SOMABRAIN_ENV": "prod",
        "SOMABRAIN_JWT_PUBLIC_KEY_PATH": str(key_path),
        "SOMABRAIN_JWT_ISSUER": jwt_keys.ISSUER,
        "SOMABRAIN_JWT_AUDIENCE": jwt_keys.AUDIENCE,
        "SOMABRAIN_OPA_URL": opa_url,
    }
