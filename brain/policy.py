"""Fail-closed authorization through OPA's Data API.

Public surface:

    client = PolicyClient(settings.opa_url, timeout=0.5, cache_ttl=2.0)   # ConfigError for a bad URL
    decision = await client.decide(method="POST", route="/recall", path="/recall", tenant=principal.tenant,
                                   subject=principal.subject, roles=principal.roles,
                                   requested_tenant=request.headers.get("X-Tenant-ID"))
    decision.raise_for_refusal()      # APIError 403 "forbidden" (policy said no) or 503 "policy_unavailable"
    await client.ping()               # GET {opa}/health == 200, for /readyz
    await client.aclose()             # at shutdown

`decide` POSTs {"input": {method, path, tenant, subject, roles[, requested_tenant]}} to
`{opa_url}/v1/data/somabrain/allow` and returns `Decision(allowed, reason, cached)`:

    reason              allowed  metric outcome  when
    "allowed"           True     allow           OPA answered true (or a cached true, with cached=True)
    "denied"            False    deny            OPA answered false
    "policy_unavailable" False   unavailable     connection error, timeout (`timeout` seconds in total), non-200
    "policy_undefined"  False    undefined       200 without "result" (rule missing), or a non-boolean result

Every decision, cached or not, increments `somabrain_policy_decisions_total{outcome}`.

Cache: only ALLOW decisions are cached, for `cache_ttl` seconds (0 disables), keyed by (tenant, subject,
method, route) AND everything else OPA sees (path, roles, requested_tenant): a cached allow is exactly what OPA
said for the same input, so it can never answer a request with fewer roles, a cross-tenant request, or another
path under the same route (e.g. DELETE /memory/.. after DELETE /memory/m-1). For the parameter-free routes
path == route, so this costs no hits there. Denials and failures are never cached. `route` is the matched
route template (e.g. "/memory/{id}"); OPA sees `path`.

The HTTP client ignores proxy environment variables (OPA is always a direct, in-cluster/in-compose hop).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
from prometheus_client import Counter

from brain.errors import APIError, ConfigError

__all__ = ["POLICY_DECISIONS", "Decision", "PolicyClient"]

log = logging.getLogger(__name__)

OUTCOMES: Final = ("allow", "deny", "unavailable", "undefined")
POLICY_DECISIONS = Counter(
    "somabrain_policy_decisions_total",
    "Authorization decisions by outcome (allow, deny, unavailable, undefined); all but allow refuse the request.",
    ["outcome"],
)
for _outcome in OUTCOMES:
    POLICY_DECISIONS.labels(outcome=_outcome)

ALLOWED: Final = "allowed"
DENIED: Final = "denied"
UNAVAILABLE: Final = "policy_unavailable"
UNDEFINED: Final = "policy_undefined"
_OUTCOME_OF_REASON: Final = {ALLOWED: "allow", DENIED: "deny", UNAVAILABLE: "unavailable", UNDEFINED: "undefined"}

LOG_EVERY_S: Final = 10.0

CacheKey = tuple[str, str, str, str, str, tuple[str, ...], str | None]


@dataclass(frozen=True)
class Decision:
    """An authorization answer. `reason` is one of "allowed", "denied", "policy_unavailable", "policy_undefined"."""

    allowed: bool
    reason: str
    cached: bool = False

    @property
    def outcome(self) -> str:
        """The metric label: allow, deny, unavailable or undefined."""
        return _OUTCOME_OF_REASON[self.reason]

    def raise_for_refusal(self) -> None:
        """Raise the APIError the API should answer with, unless allowed (403 for a denial, 503 otherwise)."""
        if self.allowed:
            return
        if self.reason == DENIED:
            raise APIError(403, "forbidden", "the authorization policy does not allow this request")
        raise APIError(
            503,
            self.reason,
            "the authorization policy could not be evaluated; requests are refused until it can (fail-closed)",
        )


class PolicyClient:
    """Async OPA Data API client with fail-closed decisions and a short allow-only cache."""

    def __init__(
        self,
        opa_url: str,
        *,
        timeout: float = 0.5,
        cache_ttl: float = 2.0,
        decision_path: str = "somabrain/allow",
        max_cache_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        variable: str = "SOMABRAIN_OPA_URL",
    ) -> None:
        parts = urlsplit(opa_url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{variable}={opa_url}: must be an http(s) URL such as http://sb_opa:8181")
        if timeout <= 0:
            raise ConfigError(f"policy timeout must be positive, got {timeout}")
        if cache_ttl < 0:
            raise ConfigError(f"policy cache TTL must be >= 0, got {cache_ttl}")
        self.opa_url = opa_url.strip().rstrip("/")
        self.decision_url = f"{self.opa_url}/v1/data/{decision_path.strip('/')}"
        self.health_url = f"{self.opa_url}/health"
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self.max_cache_entries = max_cache_entries
        self._clock = clock
        self._cache: OrderedDict[CacheKey, float] = OrderedDict()
        self._last_warning = float("-inf")
        self._suppressed = 0
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout), trust_env=False)

    async def decide(
        self,
        *,
        method: str,
        route: str,
        path: str,
        tenant: str,
        subject: str,
        roles: Sequence[str],
        requested_tenant: str | None = None,
    ) -> Decision:
        """Ask OPA (or the allow cache) whether this request may proceed. Never raises for OPA failures."""
        key: CacheKey = (tenant, subject, method, route, path, tuple(sorted(set(roles))), requested_tenant)
        if self._cached_allow(key):
            return self._count(Decision(True, ALLOWED, cached=True))
        input_doc: dict[str, Any] = {
            "method": method,
            "path": path,
            "tenant": tenant,
            "subject": subject,
            "roles": list(roles),
        }
        if requested_tenant is not None:
            input_doc["requested_tenant"] = requested_tenant
        decision = await self._ask(input_doc)
        if decision.allowed and self.cache_ttl > 0:
            self._remember(key)
        return self._count(decision)

    async def ping(self) -> bool:
        """True when OPA's /health answers 200 within the timeout."""
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._http.get(self.health_url)
        except (httpx.HTTPError, TimeoutError, OSError):
            return False
        return response.status_code == 200

    async def aclose(self) -> None:
        await self._http.aclose()

    def clear_cache(self) -> None:
        self._cache.clear()

    # --- internals ----------------------------------------------------------------------------------------------
    async def _ask(self, input_doc: dict[str, Any]) -> Decision:
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._http.post(self.decision_url, json={"input": input_doc})
                body = response.json() if response.status_code == 200 else None
        except TimeoutError:
            return self._refuse(UNAVAILABLE, f"OPA did not answer within {self.timeout:g}s")
        except (httpx.HTTPError, OSError) as exc:
            return self._refuse(UNAVAILABLE, f"OPA unreachable ({type(exc).__name__})")
        except ValueError:
            return self._refuse(UNAVAILABLE, "OPA answered invalid JSON")
        if response.status_code != 200:
            return self._refuse(UNAVAILABLE, f"OPA answered HTTP {response.status_code}")
        if not isinstance(body, dict) or "result" not in body:
            return self._refuse(UNDEFINED, "the decision is undefined (is the policy loaded?)")
        result = body["result"]
        if not isinstance(result, bool):
            return self._refuse(UNDEFINED, f"the decision is a {type(result).__name__}, not a boolean")
        return Decision(True, ALLOWED) if result else Decision(False, DENIED)

    def _refuse(self, reason: str, why: str) -> Decision:
        """Log a failure without flooding: the first one, then at most one line per LOG_EVERY_S with a count."""
        now = self._clock()
        if now - self._last_warning >= LOG_EVERY_S:
            more = f" ({self._suppressed} similar refusals not logged)" if self._suppressed else ""
            log.warning("policy: %s at %s; refusing (fail-closed)%s", why, self.decision_url, more)
            self._last_warning = now
            self._suppressed = 0
        else:
            self._suppressed += 1
        return Decision(False, reason)

    def _cached_allow(self, key: CacheKey) -> bool:
        expires = self._cache.get(key)
        if expires is None:
            return False
        if self._clock() >= expires:
            del self._cache[key]
            return False
        return True

    def _remember(self, key: CacheKey) -> None:
        self._cache[key] = self._clock() + self.cache_ttl
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_cache_entries:
            self._cache.popitem(last=False)

    @staticmethod
    def _count(decision: Decision) -> Decision:
        POLICY_DECISIONS.labels(outcome=decision.outcome).inc()
        return decision
