"""Who may use SomaMemory's data routes: the holder of the service token, that is the API.

SomaMemory takes the tenant from `X-Tenant-ID`, so whoever can call it can read, plant or delete any tenant's
memories. A data request must therefore carry `Authorization: Bearer <SOMABRAIN_MEMORY_TOKEN>`, a secret only the
API holds (compose: `.env.local`; Kubernetes: the `somabrain-memory-token` Secret). A shared token, rather than
mTLS or tokens the API signs, because it needs no CA or key distribution beside the Secret both Deployments already
mount, works the same in compose and Kubernetes, and rotates by overlap (`SOMABRAIN_MEMORY_TOKEN_PREVIOUS`).
The probes, `/metrics` and `/openapi.json` carry no tenant data and stay open.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from quart import request

from brain.errors import APIError
from brain.web.router import header_tenant

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="somamemory"'}


def caller_standing(tokens: tuple[str, ...]) -> str:
    """What /health tells a caller about its own token, so the API's readiness fails on a token SomaMemory would
    refuse (a Secret out of step) instead of on the first write: "not_required" when SomaMemory has no tokens,
    else "accepted", "refused" or "absent". It says nothing about the expected token."""
    if not tokens:
        return "not_required"
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return "absent"
    return "accepted" if _matches(presented.strip().encode(), [t.encode() for t in tokens]) else "refused"


def _matches(given: bytes, accepted: list[bytes]) -> bool:
    return any([hmac.compare_digest(given, token) for token in accepted])  # every token compared, no short cut


def token_gate(tokens: tuple[str, ...]) -> Callable[[], Awaitable[str]]:
    """A tenant resolver for the router: the request's bearer must be one of `tokens`, then the header names the
    tenant. Every token is compared, in constant time, so the answer's timing says nothing about which was close."""
    accepted = [token.encode() for token in tokens]

    async def resolve() -> str:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise APIError(401, "service_token_required",
                           "SomaMemory serves data only to the API: send Authorization: Bearer <service token>",
                           _CHALLENGE)
        if not _matches(presented.strip().encode(), accepted):
            raise APIError(401, "invalid_service_token", "the service token is not one SomaMemory accepts",
                           _CHALLENGE)
        return header_tenant()

    return resolve
