"""The gate every tenant route passes: who is calling (JWT), may they (OPA), and not too fast (rate limit).

With auth enabled the tenant, subject and roles come from the verified token; an `X-Tenant-ID` header is only
passed to the policy as `requested_tenant`, where a mismatch is denied. With auth disabled (dev), the tenant comes
from the header and the caller is the synthetic principal `dev-anonymous` with role `admin`, so the policy is
still asked, the same way in both environments. Refusals of state-changing routes are audited, best effort.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from quart import g
from quart import request as quart_request

from brain.auth import JWTVerifier, Principal
from brain.errors import APIError
from brain.policy import PolicyClient
from brain.ratelimit import RateLimiter
from brain.web.router import TENANT_HEADER, header_tenant

log = logging.getLogger(__name__)

DEV_SUBJECT = "dev-anonymous"
DEV_ROLES = ("admin",)
#: Routes whose refusals are audited (they would have changed state), mapped to the audit action.
AUDITED = {("POST", "/remember"): "remember", ("DELETE", "/memory/<item_id>"): "delete", ("POST", "/act"): "act"}

RefusalHook = Callable[[str, str, str, str], Awaitable[None]]


class Gate:
    def __init__(self, verifier: JWTVerifier | None, policy: PolicyClient | None, limiter: RateLimiter,
                 on_refusal: RefusalHook | None = None) -> None:
        self.verifier = verifier
        self.policy = policy
        self.limiter = limiter
        self.on_refusal = on_refusal

    def _principal(self) -> Principal:
        if self.verifier is None:
            return Principal(subject=DEV_SUBJECT, tenant=header_tenant(), roles=DEV_ROLES)
        return self.verifier.verify(quart_request.headers.get("Authorization"))

    async def __call__(self) -> str:
        """Resolve the request's tenant, or raise the APIError that refuses it."""
        principal: Principal | None = None
        try:
            principal = self._principal()
            g.principal = principal
            if self.policy is not None:
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
            await self.limiter.enforce(principal.tenant)
        except APIError as exc:
            await self._audit_refusal(principal, exc)
            raise
        return principal.tenant

    async def _audit_refusal(self, principal: Principal | None, exc: APIError) -> None:
        rule = quart_request.url_rule
        action = AUDITED.get((quart_request.method, rule.rule if rule is not None else ""))
        if action is None or self.on_refusal is None or exc.status >= 500:
            return
        outcome = {401: "unauthorized", 403: "denied", 429: "rate_limited"}.get(exc.status, "refused")
        tenant = principal.tenant if principal else "unknown"  # no verified identity: record nothing claimed
        subject = principal.subject if principal else "unauthenticated"
        try:
            await self.on_refusal(tenant, subject, action, outcome)
        except Exception as audit_exc:  # a refusal is answered even when its audit cannot be written
            log.warning("could not audit a refused %s: %s", action, audit_exc)
