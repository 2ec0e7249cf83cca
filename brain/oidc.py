"""JWT signing keys from an OpenID Connect issuer: the key source brain.auth's verifier uses instead of PEM files.

    keys = JWKSCache("https://idp.example/realms/soma", algorithms=("RS256",))
    verifier = JWTVerifier(keys, issuer="https://idp.example/realms/soma", audience="somabrain-api")
    keys.start() ... await keys.stop()         # the app's lifetime (brain.api.state)
    await keys.health()                        # the `jwks` health component

How keys arrive:
- authlib's HTTP client (`authlib.integrations.httpx_client.AsyncOAuth2Client`, which authlib 1.9 builds on
  httpx2) fetches the discovery document `<issuer>/.well-known/openid-configuration` and the JWKS it names
  (`jwks_uri`); authlib's `OpenIDProviderMetadata` checks the document's `issuer` and `jwks_uri`. The `issuer`
  must be the configured URL exactly (OpenID Connect Discovery 1.0, section 4.3), and both URLs must be https, plain
  http only to a loopback address (brain.settings.key_url_problem). No redirect is followed; a document is at most
  MAX_DOCUMENT_BYTES; a whole fetch gets FETCH_TIMEOUT_S.
- joserfc imports the JWKS, key by key, so that one odd entry does not discard the set. Kept are the keys that can
  verify the configured algorithms, by the PEM files' rule (brain.auth.check_key_fits: RSA of 2048 bits or more for
  RS/PS, EC on the matching curve for ES), with `use` absent or "sig" and `alg` absent or configured. Entries with
  private key members are never imported. A set without one usable key is a failed fetch.
- A token's `kid` picks its key. A token without one is tried against every cached key, as with PEM files.
- A fetch happens at start (the background task), when the cached keys are older than `max_age_s`, and when a token
  names a `kid` the cache does not hold. Whatever asks for it, a fetch starts at most once per `min_refresh_s`, and
  concurrent askers share the one in flight: a flood of made-up kids costs the issuer at most one JWKS fetch per
  interval (per worker process), and every such token is a 401. The discovery document is fetched again with the
  max-age refresh and after a failed fetch; the other refreshes fetch the JWKS only.
- A failed fetch keeps the cached keys: tokens keep verifying while the issuer is down, and the failure shows in the
  log and in the `jwks` health component (`stale` once the keys are past their max age). Until the first key set is
  loaded the component is down, so the API is not ready, and a token is answered 503 `auth_unavailable` rather than
  401. Start-up does not wait for the issuer: a down issuer is a readiness problem, not a configuration error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import httpx2
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oidc.discovery import OpenIDProviderMetadata, get_well_known_url
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, RSAKey

from brain import tasks
from brain.auth import RSA_ALGORITHMS, VerificationKey, check_key_fits
from brain.errors import ConfigError
from brain.settings import PREFIX, key_url_problem

__all__ = ["FETCH_TIMEOUT_S", "MAX_DOCUMENT_BYTES", "MAX_JWKS_KEYS", "JWKSCache"]

log = logging.getLogger(__name__)

#: The discovery document and the JWKS, each; real ones are a few KiB.
MAX_DOCUMENT_BYTES = 256 * 1024
#: Entries of a JWKS looked at; issuers publish a handful (the current key, the next, the previous).
MAX_JWKS_KEYS = 100
#: One whole fetch (discovery and JWKS, connection included); a request waiting on a refresh waits at most this.
FETCH_TIMEOUT_S = 5.0
#: JWK members that only a private key has (RFC 7518, sections 6.2.2 and 6.3.2).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class _FetchError(Exception):
    """A fetch that got an answer which cannot be used (the message says what, never any key material)."""


def _kty(algorithm: str) -> str:
    return "RSA" if algorithm in RSA_ALGORITHMS else "EC"


def _usable_keys(document: Any, algorithms: tuple[str, ...], where: str) -> dict[str, VerificationKey]:
    """The keys of a JWKS document that can verify `algorithms`, by kid (a kid-less key gets its RFC 7638
    thumbprint as kid, which no token names; it still verifies tokens without a kid)."""
    entries = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(entries, list):
        raise _FetchError(f"JWKS {where}: not a JWK Set (an object with a 'keys' list)")
    if len(entries) > MAX_JWKS_KEYS:
        raise _FetchError(f"JWKS {where}: {len(entries)} keys, more than {MAX_JWKS_KEYS}")
    wanted = {_kty(alg) for alg in algorithms}
    keys: list[RSAKey | ECKey] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            continue
        name = f"key {index}" + (f" (kid {str(entry['kid'])[:64]!r})" if "kid" in entry else "")
        if entry.get("kty") not in wanted or entry.get("use", "sig") != "sig":
            continue  # another algorithm family, or an encryption key: normal in a JWKS
        if "alg" in entry and entry["alg"] not in algorithms:
            continue
        if _PRIVATE_MEMBERS & set(entry):
            log.error("JWKS %s: %s holds private key material; ignored (the issuer publishes a secret)", where, name)
            continue
        try:
            key = JWKRegistry.import_key(dict(entry))
            if not isinstance(key, (RSAKey, ECKey)) or key.is_private:
                continue
            check_key_fits(key.raw_value, algorithms)
        except (JoseError, ValueError, TypeError, KeyError, ConfigError) as exc:
            log.warning("JWKS %s: %s ignored: %s", where, name, exc)
            continue
        keys.append(key)
    if not keys:
        raise _FetchError(f"JWKS {where}: no key usable with {', '.join(algorithms)}")
    by_kid: dict[str, VerificationKey] = {}
    for key in keys:
        key.ensure_kid()  # a kid-less key gets its RFC 7638 thumbprint, as in a joserfc KeySet
        kid = str(key.kid)
        if kid in by_kid:
            log.warning("JWKS %s: a second key with kid %r ignored", where, kid[:64])
            continue
        by_kid[kid] = key
    return by_kid


class JWKSCache:
    """The signing keys of one OpenID Connect issuer, cached, refreshed by max age and by unknown kids (bounded).

    Implements brain.auth.KeySource. `clock` is monotonic seconds (tests pass a fake one to step through intervals).
    """

    def __init__(
        self,
        issuer: str,
        *,
        algorithms: Iterable[str] = ("RS256",),
        min_refresh_s: float = 30.0,
        max_age_s: float = 3600.0,
        ca_file: str | None = None,
        timeout_s: float = FETCH_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Raises ConfigError (naming the variable) for a bad issuer URL or CA file; contacts nobody."""
        problem = key_url_problem(issuer)
        if problem is not None:
            raise ConfigError(f"{PREFIX}JWT_OIDC_ISSUER={issuer!r}: {problem}")
        self.issuer = issuer
        self.algorithms = tuple(dict.fromkeys(algorithms))
        self.min_refresh_s = min_refresh_s
        self.max_age_s = max_age_s
        self.ca_file = ca_file
        self._timeout_s = timeout_s
        self._clock = clock
        self._tls()  # a CA file that cannot be read is a start-up error, not a health one
        self._keys: dict[str, VerificationKey] = {}
        self._loaded_at: float | None = None
        self._jwks_uri: str | None = None
        self._discovered_at: float | None = None
        self._rediscover = True
        self._last_attempt: float | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        #: Fetch attempts (each one JWKS request, plus the discovery document when due) and failed ones.
        self.fetches = 0
        self.failures = 0
        self.last_error: str | None = None

    # --- KeySource ------------------------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._loaded_at is not None

    @property
    def kids(self) -> tuple[str, ...]:
        """The kids of the cached keys (a kid-less key appears under its RFC 7638 thumbprint)."""
        return tuple(self._keys)

    def keys_for(self, kid: str | None) -> Sequence[VerificationKey]:
        if kid is None:
            return tuple(self._keys.values())
        key = self._keys.get(kid)
        return (key,) if key is not None else ()

    async def refresh(self) -> None:
        """Fetch now, unless a fetch started less than `min_refresh_s` ago; join the fetch in flight, if any.

        A failed fetch is recorded (log, health) and keeps the cached keys; it does not raise.
        """
        task = self._inflight
        if task is None:
            if self._last_attempt is not None and self._clock() - self._last_attempt < self.min_refresh_s:
                return
            self._last_attempt = self._clock()
            task = self._inflight = asyncio.get_running_loop().create_task(self._fetch(), name="jwks-fetch")
            task.add_done_callback(self._fetch_done)
        await asyncio.shield(task)  # a cancelled waiter (a client gone) leaves the fetch to the others

    # --- lifetime ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the background task: the first fetch now, then one per max age (retries at the minimum interval)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="jwks-refresh")

    async def stop(self) -> None:
        await tasks.cancel(self._task)
        self._task = None
        await tasks.cancel(self._inflight)

    async def tick(self) -> float:
        """One step of the background task: refresh if the keys are missing or past their max age; returns the
        seconds until the next step is due."""
        if self._due():
            await self.refresh()
        now = self._clock()
        allowed = 0.0 if self._last_attempt is None else self._last_attempt + self.min_refresh_s - now
        if self._loaded_at is None:
            return max(allowed, 0.05)
        return max(self._loaded_at + self.max_age_s - now, allowed, 0.05)

    async def health(self) -> dict[str, Any]:
        """`ok` once a key set is loaded, and still while the issuer is down (the cached keys serve); `stale` once
        they are past their max age. The detail (issuer, errors) is for the internal view only."""
        result: dict[str, Any] = {"ok": self.loaded, "stale": False, "issuer": self.issuer, "kids": list(self.kids),
                                  "fetches": self.fetches, "failures": self.failures}
        if self._loaded_at is not None:
            age = self._clock() - self._loaded_at
            result["stale"] = age >= self.max_age_s
            result["age_s"] = round(age, 1)
        if self.last_error is not None:
            result["error" if not self.loaded else "last_error"] = self.last_error
        elif not self.loaded:
            result["error"] = "no key set loaded yet"
        return result

    # --- internals --------------------------------------------------------------------------------------------
    def _due(self) -> bool:
        return self._loaded_at is None or self._clock() - self._loaded_at >= self.max_age_s

    def _tls(self) -> ssl.SSLContext | bool:
        """The TLS trust for the issuer: the CA file (read at each fetch, so a rotated bundle is picked up), else
        the system's trust store (httpx2's default, which honours SSL_CERT_FILE)."""
        if self.ca_file is None:
            return True
        try:
            return ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigError(
                f"{PREFIX}JWT_OIDC_CA_FILE={self.ca_file}: not a readable PEM CA bundle ({exc})"
            ) from None

    async def _run(self) -> None:
        while True:
            try:
                delay = await self.tick()
            except Exception:  # a bug guard: refresh() records every fetch failure itself
                log.exception("JWKS refresh of %s failed", self.issuer)
                delay = self.min_refresh_s
            await asyncio.sleep(delay)

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved: the waiters (if any are left) got it too

    async def _fetch(self) -> None:
        self.fetches += 1
        try:
            async with asyncio.timeout(self._timeout_s):
                keys, jwks_uri = await self._download()
        except (_FetchError, httpx2.HTTPError, httpx2.InvalidURL, TimeoutError, ConfigError) as exc:
            self.failures += 1
            self._rediscover = True
            if isinstance(exc, TimeoutError):
                self.last_error = f"no complete answer within {self._timeout_s:g}s"
            elif isinstance(exc, _FetchError):
                self.last_error = str(exc)[:300]
            else:
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            level = logging.WARNING if self.loaded else logging.ERROR
            log.log(level, "JWT keys of %s not refreshed (%s); %s", self.issuer, self.last_error,
                    f"still verifying with the {len(self._keys)} cached key(s)" if self.loaded else "no key loaded yet")
            return
        if keys.keys() != self._keys.keys():
            log.info("JWT keys of %s from %s: kid(s) %s", self.issuer, jwks_uri, ", ".join(sorted(keys)))
        self._keys = keys
        self._loaded_at = self._clock()
        self.last_error = None

    async def _download(self) -> tuple[dict[str, VerificationKey], str]:
        now = self._clock()
        rediscover = (self._rediscover or self._jwks_uri is None or self._discovered_at is None
                      or now - self._discovered_at >= self.max_age_s)
        client: Any = AsyncOAuth2Client(verify=self._tls(), timeout=self._timeout_s, follow_redirects=False)
        async with client:
            jwks_uri = self._jwks_uri
            if rediscover or jwks_uri is None:
                jwks_uri = await self._discover(client)
                self._jwks_uri, self._discovered_at, self._rediscover = jwks_uri, now, False
            return _usable_keys(await self._get_json(client, jwks_uri, "JWKS"), self.algorithms, jwks_uri), jwks_uri

    async def _discover(self, client: Any) -> str:
        url: str = get_well_known_url(self.issuer, external=True)
        document = await self._get_json(client, url, "discovery document")
        if not isinstance(document, dict):
            raise _FetchError(f"discovery document {url}: not a JSON object")
        named = document.get("issuer")
        if named != self.issuer:
            shown = str(named)[:200] if named is not None else "none"
            raise _FetchError(
                f"discovery document {url} names issuer {shown!r}, not {PREFIX}JWT_OIDC_ISSUER={self.issuer!r} (they "
                "must be identical: OpenID Connect Discovery 1.0, section 4.3)"
            )
        jwks_uri = document.get("jwks_uri")
        if jwks_uri is not None and not isinstance(jwks_uri, str):
            raise _FetchError(f"discovery document {url}: 'jwks_uri' is not a URL")
        problem = None if jwks_uri is None else key_url_problem(jwks_uri)
        if jwks_uri is not None and problem is not None:  # checked here whatever AUTHLIB_INSECURE_TRANSPORT says
            raise _FetchError(f"discovery document {url}: jwks_uri {jwks_uri[:200]!r} {problem}")
        try:
            metadata = OpenIDProviderMetadata(document)
            metadata.validate_issuer()
            metadata.validate_jwks_uri()  # required in OpenID Connect
        except ValueError as exc:
            raise _FetchError(f"discovery document {url}: {exc}") from None
        assert isinstance(jwks_uri, str)  # validate_jwks_uri() refuses a document without one
        return jwks_uri

    @staticmethod
    async def _get_json(client: Any, url: str, what: str) -> Any:
        async with client.stream("GET", url, withhold_token=True, headers={"Accept": "application/json"}) as response:
            if response.status_code != 200:
                raise _FetchError(f"{what} {url}: HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise _FetchError(f"{what} {url}: larger than {MAX_DOCUMENT_BYTES // 1024} KiB")
        try:
            return json.loads(body)
        except ValueError:
            raise _FetchError(f"{what} {url}: not JSON") from None
