"""The gate every tenant route passes: who is calling (JWT), not too fast (rate limits), and may they (OPA).

The cheap checks come first, so that a flood costs neither a policy decision nor a write:
1. the caller: a verified JWT (its key from PEM files, or from an OIDC issuer's JWKS, which a token naming an
   unknown `kid` may refresh once per interval: brain.oidc), or with auth disabled (dev) the `X-Tenant-ID` header
   and the synthetic principal `dev-anonymous` with role `admin` (so the policy is still asked, the same way in
   both environments);
2. a caller without a verified identity is limited per client address (brain.web.clients): with auth disabled
   that is every caller, since a header is a claim anyone can vary; with auth on, a request whose token fails is
   charged to its address and, once the address is over its rate, answered 429 instead of 401. A verified caller
   is never charged for its neighbours' failures behind the same NAT or proxy;
3. the tenant's own rate limit;
4. OPA's decision (with auth on, an `X-Tenant-ID` header only goes to the policy as `requested_tenant`, where a
   mismatch is denied).
Every refusal is counted in `somabrain_refusals_total{reason}`; refusals of state-changing routes are audited in
aggregate (brain.audit.refusals), never one write per refused request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from quart import g
from quart import request as quart_request

from brain import metrics
from brain.audit.refusals import RefusalAudit
from brain.auth import JWTVerifier, Principal
from brain.errors import APIError
from brain.policy import PolicyClient
from brain.ratelimit import RateLimiter
from brain.web.clients import IPNetwork, client_address
from brain.web.router import TENANT_HEADER, header_tenant

DEV_SUBJECT = "dev-anonymous"
DEV_ROLES = ("admin",)
#: Routes whose refusals are audited (they would have changed state), mapped to the audit action.
AUDITED = {("POST", "/remember"): "remember", ("DELETE", "/memory/<item_id>"): "delete", ("POST", "/act"): "act"}
#: The refusal reason (metric label) of each status the gate answers; anything else (e.g. 400) is bad input.
REASONS: Final = {401: "unauthenticated", 403: "forbidden", 429: "rate_limited", 503: "unavailable"}
#: The audit outcome of each audited reason; a 503 is the service's failure, not the caller's refusal.
OUTCOMES: Final = {"unauthenticated": "unauthorized", "forbidden": "denied", "rate_limited": "rate_limited"}


class Gate:
    def __init__(self, verifier: JWTVerifier | None, policy: PolicyClient | None, tenants: RateLimiter,
                 addresses: RateLimiter, trusted_proxies: Sequence[IPNetwork] = (), app_name: str = "api") -> None:
        self.verifier = verifier
        self.policy = policy
        self.tenants = tenants
        self.addresses = addresses
        self.trusted_proxies = tuple(trusted_proxies)
        self.app_name = app_name
        self.refusals: RefusalAudit | None = None
        for reason in REASONS.values():  # every series exists from the start, at zero
            metrics.REFUSALS.labels(app_name, reason)

    async def __call__(self) -> str:
        """Resolve the request's tenant, or raise the APIError that refuses it."""
        try:
            principal = await self._authenticate()
            g.principal = principal
            await self.tenants.enforce(principal.tenant)
            await self._authorize(principal)
        except APIError as exc:
            self._count_refusal(exc)
            raise
        return principal.tenant

    async def _authenticate(self) -> Principal:
        """The caller, after charging an unverified one to its address (429 replaces the 401 over the rate)."""
        if self.verifier is None:
            await self.addresses.enforce(client_address(self.trusted_proxies))
            return Principal(subject=DEV_SUBJECT, tenant=header_tenant(), roles=DEV_ROLES)
        try:
            return await self.verifier.authenticate(quart_request.headers.get("Authorization"))
        except APIError:
            await self.addresses.enforce(client_address(self.trusted_proxies))
            raise

    async def _authorize(self, principal: Principal) -> None:
        if self.policy is None:
            return
        rule = quart_request.url_rule
        decision = await self.policy.decide(
            method=quart_request.method,
            route=rule.rule if rule is not None else quart_request.path,
            path=quart_request.path,
            tenant=principal.tenant,
            subject=principal.subject,
            roles=principal.roles,
            requested_tenant=quart_request.headers.get(TENANT_HEADER) if self.verifier else None,
        )
        decision.raise_for_refusal()

    def _count_refusal(self, exc: APIError) -> None:
        reason = REASONS.get(exc.status)
        if reason is None:
            return
        metrics.REFUSALS.labels(self.app_name, reason).inc()
        rule = quart_request.url_rule
        action = AUDITED.get((quart_request.method, rule.rule if rule is not None else ""))
        outcome = OUTCOMES.get(reason)
        if action is not None and outcome is not None and self.refusals is not None:
            self.refusals.record(outcome, action)
