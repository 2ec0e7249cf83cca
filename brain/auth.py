"""Bearer-token (JWT) verification for the SomaBrain API.

Public surface (all the API layer needs):

    verifier = load_verifier(settings.jwt_public_key_path, issuer=..., audience=..., tenant_claim="tenant")
        # -> JWTVerifier; raises ConfigError (message names SOMABRAIN_JWT_PUBLIC_KEY_PATH) when the file is
        #    missing, unreadable, empty, a private key, not a PEM public key/certificate, a weak RSA key, or a
        #    key that does not fit the configured algorithms. Call it at start-up: auth never silently
        #    degrades to no auth.
    principal = await verifier.authenticate(request.headers.get("Authorization"))   # the gate's call
        # -> Principal(subject, tenant, roles); raises APIError(401, "unauthorized", detail,
        #    {"WWW-Authenticate": 'Bearer realm="somabrain", error="invalid_token", error_description="..."'})
        # `verify()` is the same check, synchronous, with the keys the verifier holds now.

Where the keys come from is a `KeySource`: PEM files (`load_verifier`, `StaticKeys`: every key is tried, a
token's `kid` is ignored), or an OpenID Connect issuer's JWKS (brain.oidc: keys picked by `kid`, and a `kid` the
cache does not know makes `authenticate` ask the source for one bounded refresh before it verifies). Either way the
rules below are the same code.

Rules enforced by `JWTVerifier.verify`:
- The header must be `Bearer <compact JWS>` (scheme case-insensitive), token at most 8 KiB.
- The signature algorithm comes from configuration (default RS256), never from the token: `alg=none`, HS256
  signed with the public key (key confusion) and any algorithm outside the configured list are refused.
- `iss` must equal the configured issuer; `aud` (string or list) must contain the configured audience;
  `exp` is required and `nbf` (when present) enforced, both with `leeway` seconds of clock skew; `sub` is
  required (non-empty, <= 256 chars, no control characters).
- The tenant comes from the `tenant_claim` claim (default "tenant") and must match TENANT_PATTERN (the same
  pattern as k8s/policy/somabrain.rego). A header can never override it: the caller passes any X-Tenant-ID to
  the policy as `requested_tenant`, where a mismatch is denied.
- Roles come from `roles_claim` (default "roles"): a list of strings or one space-separated string; absent
  means no roles (the policy then denies). Claim names are looked up as exact keys first, then as dotted
  paths into nested objects (e.g. "realm_access.roles").
- Error details are fixed phrases plus configured claim names: they never echo the token, its claims or key
  material.

Built on joserfc (by the authlib authors; authlib 1.9 deprecates `authlib.jose` in its favour and
depends on joserfc). authlib itself fetches an OIDC issuer's discovery document and JWKS (brain.oidc); joserfc
verifies every token, whichever source its key came from.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
    UnsupportedAlgorithmError,
)
from joserfc.jwk import ECKey, RSAKey

from brain.errors import APIError, ConfigError

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "TENANT_PATTERN",
    "JWTVerifier",
    "KeySource",
    "Principal",
    "StaticKeys",
    "VerificationKey",
    "check_key_fits",
    "load_verifier",
]

#: Same pattern as `tenant_ok` in k8s/policy/somabrain.rego.
TENANT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
EC_ALGORITHMS = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
SUPPORTED_ALGORITHMS = frozenset(RSA_ALGORITHMS | set(EC_ALGORITHMS))
MIN_RSA_BITS = 2048
MAX_TOKEN_BYTES = 8192
MAX_KEY_FILE_BYTES = 64 * 1024
MAX_ROLES = 64
REALM = "somabrain"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's `sub`, its tenant claim and its roles."""

    subject: str
    tenant: str
    roles: tuple[str, ...]


def _unauthorized(description: str, *, error: str | None = "invalid_token") -> APIError:
    challenge = f'Bearer realm="{REALM}"'
    if error is not None:
        quoted = description.replace("\\", "").replace('"', "'")
        challenge += f', error="{error}", error_description="{quoted}"'
    return APIError(401, "unauthorized", description, {"WWW-Authenticate": challenge})


VerificationKey = RSAKey | ECKey


@runtime_checkable
class KeySource(Protocol):
    """Where a verifier's public keys come from (PEM files: `StaticKeys`; an OIDC issuer: brain.oidc.JWKSCache)."""

    @property
    def loaded(self) -> bool:
        """Whether the source holds any key at all (False only while an issuer's first key set is awaited)."""
        ...

    def keys_for(self, kid: str | None) -> Sequence[VerificationKey]:
        """The keys a token whose header names `kid` (None: no kid) may be signed with; empty: the kid is unknown."""
        ...

    async def refresh(self) -> None:
        """Look for new keys now, if the source allows it now (bounded); never raises for an unreachable issuer."""
        ...


class StaticKeys:
    """Keys read once from PEM files: every token is tried against each of them, whatever `kid` it names."""

    def __init__(self, keys: Iterable[VerificationKey]) -> None:
        self.keys = tuple(keys)
        if not self.keys:
            raise ConfigError("the JWT key set is empty")

    @property
    def loaded(self) -> bool:
        return True

    def keys_for(self, kid: str | None) -> Sequence[VerificationKey]:
        return self.keys

    async def refresh(self) -> None:
        return None


def _header_kid(token: str) -> str | None:
    """The `kid` of a compact JWS's protected header, unverified, only to pick a key (None when absent or odd)."""
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):
        return None
    kid = header.get("kid") if isinstance(header, dict) else None
    return kid if isinstance(kid, str) else None


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    """Exact key first (namespaced claims like "https://x.example/tenant"), then a dotted path."""
    if name in claims:
        return claims[name]
    node: Any = claims
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


class JWTVerifier:
    """Verifies `Authorization: Bearer <JWT>` headers against a key set and fixed claim rules.

    The key set is usually one key; during a signing-key rotation it holds the old and the new key, and a token
    signed by either verifies (see `load_verifier`: a directory of PEM files). `keys` is PEM text (one key or an
    iterable of them) or a `KeySource` (brain.oidc: an issuer's JWKS).
    """

    def __init__(
        self,
        keys: bytes | str | Iterable[bytes | str] | KeySource,
        *,
        algorithms: Iterable[str] = ("RS256",),
        issuer: str,
        audience: str,
        tenant_claim: str = "tenant",
        roles_claim: str = "roles",
        leeway: int = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Raises ConfigError for unusable settings; the key text never appears in a message."""
        self.algorithms = tuple(dict.fromkeys(algorithms))
        if not self.algorithms:
            raise ConfigError("JWT algorithms: at least one algorithm is required (e.g. RS256)")
        unsupported = [alg for alg in self.algorithms if alg not in SUPPORTED_ALGORITHMS]
        if unsupported:
            raise ConfigError(
                f"JWT algorithms: {', '.join(unsupported)} not supported; use public-key algorithms "
                f"({', '.join(sorted(SUPPORTED_ALGORITHMS))})"
            )
        if not issuer.strip():
            raise ConfigError("SOMABRAIN_JWT_ISSUER: must be set when auth is enabled")
        if not audience.strip():
            raise ConfigError("SOMABRAIN_JWT_AUDIENCE: must be set when auth is enabled")
        if not tenant_claim.strip():
            raise ConfigError("SOMABRAIN_JWT_TENANT_CLAIM: must not be empty")
        if not roles_claim.strip():
            raise ConfigError("JWT roles claim name must not be empty")
        if not 0 <= leeway <= 300:
            raise ConfigError(f"JWT leeway must be between 0 and 300 seconds, got {leeway}")
        self.issuer = issuer
        self.audience = audience
        self.tenant_claim = tenant_claim
        self.roles_claim = roles_claim
        self.leeway = leeway
        self._clock = clock
        if isinstance(keys, KeySource):
            self.keys: KeySource = keys
        else:
            pems = [keys] if isinstance(keys, (bytes, str)) else list(keys)
            self.keys = StaticKeys(_import_public_key(pem, self.algorithms) for pem in pems)

    def verify(self, authorization: str | None) -> Principal:
        """Check an Authorization header value and return the caller; raises APIError(401) otherwise (503 while a
        key source has no key at all yet). Uses the keys held now: it never waits for a refresh."""
        return self._verify_token(self._extract_token(authorization))

    async def authenticate(self, authorization: str | None) -> Principal:
        """`verify`, after the one bounded key refresh a token naming an unknown `kid` may trigger (see KeySource).

        PEM keys never refresh (they take every kid). With an issuer's JWKS, a flood of tokens with made-up kids
        costs the issuer at most one fetch per refresh interval (brain.oidc), and each such token is a 401.
        """
        token = self._extract_token(authorization)
        if not self.keys.keys_for(_header_kid(token)):
            await self.keys.refresh()
        return self._verify_token(token)

    def _verify_token(self, token: str) -> Principal:
        keys = self.keys.keys_for(_header_kid(token))
        if not keys:
            if not self.keys.loaded:
                raise APIError(503, "auth_unavailable", "the token issuer's signing keys are not loaded yet; "
                               "retry later")
            raise _unauthorized("token signing key is not known")
        try:
            decoded = self._decode(token, keys)
        except UnsupportedAlgorithmError:
            raise _unauthorized("token algorithm not allowed") from None
        except BadSignatureError:
            raise _unauthorized("token signature is invalid") from None
        except (JoseError, ValueError, TypeError):
            raise _unauthorized("token is malformed") from None
        claims = decoded.claims
        self._validate_registered_claims(claims)
        return Principal(
            subject=self._subject(claims),
            tenant=self._tenant(claims),
            roles=self._roles(claims),
        )

    def _decode(self, token: str, keys: Sequence[VerificationKey]) -> Any:
        """Decode with the first key whose signature matches; the last key's error stands when none does."""
        for key in keys[:-1]:
            try:
                return jwt.decode(token, key, algorithms=list(self.algorithms))
            except BadSignatureError:
                continue
        return jwt.decode(token, keys[-1], algorithms=list(self.algorithms))

    # --- steps ----------------------------------------------------------------------------------------------
    @staticmethod
    def _extract_token(authorization: str | None) -> str:
        if authorization is None or not authorization.strip():
            raise _unauthorized("missing bearer token", error=None)
        parts = authorization.strip().split(" ")
        if len(parts) != 2 or parts[0].lower() != "bearer" or not parts[1]:
            raise _unauthorized("Authorization header must be 'Bearer <token>'", error="invalid_request")
        token = parts[1]
        if len(token) > MAX_TOKEN_BYTES:
            raise _unauthorized("token is too large")
        if not token.isascii() or token.count(".") != 2:
            raise _unauthorized("token is malformed")
        return token

    def _validate_registered_claims(self, claims: dict[str, Any]) -> None:
        registry = jwt.JWTClaimsRegistry(
            now=lambda: int(self._clock()),
            leeway=self.leeway,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            exp={"essential": True},
            sub={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise _unauthorized("token has expired") from None
        except MissingClaimError as exc:
            raise _unauthorized(f"token lacks required claim(s): {exc.claim}") from None
        except InvalidClaimError as exc:
            if exc.claim == "nbf":
                raise _unauthorized("token is not valid yet (nbf)") from None
            if exc.claim == "iss":
                raise _unauthorized("token issuer is not accepted") from None
            if exc.claim == "aud":
                raise _unauthorized("token audience is not accepted") from None
            raise _unauthorized(f"token claim '{exc.claim}' is invalid") from None
        except JoseError:
            raise _unauthorized("token claims are invalid") from None

    @staticmethod
    def _subject(claims: Mapping[str, Any]) -> str:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject.strip() or len(subject) > 256 or _CONTROL.search(subject):
            raise _unauthorized("token claim 'sub' is invalid")
        return subject

    def _tenant(self, claims: Mapping[str, Any]) -> str:
        tenant = _claim(claims, self.tenant_claim)
        if tenant is None:
            raise _unauthorized(f"token lacks the tenant claim '{self.tenant_claim}'")
        if not isinstance(tenant, str) or not TENANT_PATTERN.fullmatch(tenant):
            raise _unauthorized(f"token claim '{self.tenant_claim}' is not a valid tenant id")
        return tenant

    def _roles(self, claims: Mapping[str, Any]) -> tuple[str, ...]:
        raw = _claim(claims, self.roles_claim)
        if raw is None:
            return ()
        roles = raw.split() if isinstance(raw, str) else raw
        if (
            not isinstance(roles, list)
            or len(roles) > MAX_ROLES
            or not all(isinstance(r, str) and 0 < len(r) <= 64 and not _CONTROL.search(r) for r in roles)
        ):
            raise _unauthorized(f"token claim '{self.roles_claim}' must be a list of role names")
        return tuple(dict.fromkeys(roles))


def _import_public_key(pem: bytes | str, algorithms: tuple[str, ...]) -> RSAKey | ECKey:
    """PEM public key or X.509 certificate -> joserfc key, checked against the configured algorithms."""
    data = pem.encode() if isinstance(pem, str) else pem
    if b"PRIVATE KEY" in data:
        raise ConfigError("the JWT key is a PRIVATE key; configure the issuer's PUBLIC key (or certificate)")
    public_key: object
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            public_key = x509.load_pem_x509_certificate(data).public_key()
        else:
            public_key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(
            "the JWT key is not a PEM public key ('-----BEGIN PUBLIC KEY-----') or X.509 certificate"
        ) from None
    fitting = check_key_fits(public_key, algorithms)
    spki = fitting.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if isinstance(fitting, rsa.RSAPublicKey):
        return RSAKey.import_key(spki)
    return ECKey.import_key(spki)


def check_key_fits(
    public_key: object, algorithms: Iterable[str]
) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    """`public_key`, if it is an RSA key of at least MIN_RSA_BITS for RSA algorithms, or an EC key on the curve of
    each EC algorithm; ConfigError ("the JWT key ...") otherwise. The same rule for PEM files and JWKS entries."""
    if isinstance(public_key, rsa.RSAPublicKey):
        wrong = [alg for alg in algorithms if alg not in RSA_ALGORITHMS]
        if wrong:
            raise ConfigError(f"the JWT key is an RSA key but the algorithms include {', '.join(wrong)}")
        if public_key.key_size < MIN_RSA_BITS:
            raise ConfigError(f"the JWT key is a {public_key.key_size}-bit RSA key; at least {MIN_RSA_BITS} needed")
        return public_key
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve = public_key.curve.name
        wrong = [alg for alg in algorithms if EC_ALGORITHMS.get(alg) != curve]
        if wrong:
            raise ConfigError(f"the JWT key is an EC {curve} key, which does not fit {', '.join(wrong)}")
        return public_key
    raise ConfigError(f"the JWT key type {type(public_key).__name__} is not supported; use RSA or EC")


def load_verifier(
    path: str | Path,
    *,
    issuer: str,
    audience: str,
    algorithms: Iterable[str] = ("RS256",),
    tenant_claim: str = "tenant",
    roles_claim: str = "roles",
    leeway: int = 30,
    variable: str = "SOMABRAIN_JWT_PUBLIC_KEY_PATH",
) -> JWTVerifier:
    """Read the public key (a PEM file, or a directory of *.pem files: a key set, for rotation) and build a
    verifier; every problem is a ConfigError naming `variable`."""
    where = f"{variable}={path}"
    if not str(path).strip():
        raise ConfigError(f"{variable}: must be set to the JWT public key file when auth is enabled")
    key_path = Path(path)
    try:
        files = sorted(key_path.glob("*.pem")) if key_path.is_dir() else [key_path]
    except OSError as exc:
        raise ConfigError(f"{where}: cannot list the key directory ({exc.strerror})") from None
    if not files:
        raise ConfigError(f"{where}: the directory holds no *.pem public keys")
    data = [_read_key_file(f, f"{variable}={f}") for f in files]
    try:
        return JWTVerifier(
            data,
            algorithms=algorithms,
            issuer=issuer,
            audience=audience,
            tenant_claim=tenant_claim,
            roles_claim=roles_claim,
            leeway=leeway,
        )
    except ConfigError as exc:
        message = str(exc)
        if message.startswith("the JWT key"):
            raise ConfigError(f"{where}: {message}") from None
        raise


def _read_key_file(key_path: Path, where: str) -> bytes:
    try:
        if key_path.is_dir():
            raise ConfigError(f"{where}: is a directory, expected a PEM public key file")
        size = key_path.stat().st_size
        if size > MAX_KEY_FILE_BYTES:
            raise ConfigError(f"{where}: file is {size} bytes, too large to be a public key")
        data = key_path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read key file ({exc.strerror or type(exc).__name__})") from None
    if not data.strip():
        raise ConfigError(f"{where}: key file is empty")
    return data
