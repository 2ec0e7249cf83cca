"""The API's HTTP client for SomaMemory (`SOMABRAIN_MEMORY_HTTP_ENDPOINT`).

A failure says what is known about the operation: `MemoryUnavailable` itself means it certainly did not take effect
(SomaMemory was never reached, refused the request, or said it wrote nothing); its subclass `MemoryOutcomeUnknown`
means it may have (the request may have arrived, but no answer said how it ended).
"""

from __future__ import annotations

from typing import Any

import httpx

from brain.logs import request_id
from brain.web.router import TENANT_HEADER


class MemoryUnavailable(Exception):
    """SomaMemory could not be reached or did not confirm the operation. Raised as this class (not a subclass): the
    operation certainly did not take effect."""


class MemoryOutcomeUnknown(MemoryUnavailable):
    """The request may have reached SomaMemory and taken effect, but no answer said so: a read timeout, the connection
    lost once the request was on its way, or a 5xx other than SomaMemory's own 503 `storage_unavailable`.

    `broken` is true when the connection broke (rather than timed out or answered an error): a new connection is
    then likely to get through, and a write idempotent by id can be sent again to settle the outcome.
    """

    def __init__(self, message: str, *, broken: bool = False) -> None:
        super().__init__(message)
        self.broken = broken


class MemoryConflict(Exception):
    """SomaMemory holds another memory under this id (an idempotency key used for a different body): nothing was
    written."""


class MemoryQuotaExceeded(Exception):
    """SomaMemory refused the write because the tenant is at its quota (403 `quota_exceeded`): nothing was written,
    and sending it again changes nothing until the tenant deletes memories. Its message is SomaMemory's detail."""


class MemoryRefused(Exception):
    """SomaMemory refused the write's body (400, 413 or 422): nothing was written, and the same body is refused every
    time it is sent. The API accepted it, so the two disagree on what a memory may be (e.g. a lower
    SOMABRAIN_MAX_BODY_BYTES on SomaMemory). `status` and `code` are SomaMemory's; the message is its detail."""

    def __init__(self, status: int, code: str | None, detail: str) -> None:
        super().__init__(f"SomaMemory refused the write (HTTP {status}{f' {code}' if code else ''}): "
                         f"{detail or 'no detail given'}")
        self.status = status
        self.code = code


#: Failures before any byte of the request can have been sent: nothing took effect.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
#: SomaMemory's answers that refuse the body itself: bad request, too large, invalid.
_BODY_REFUSED = (400, 413, 422)
#: SomaMemory's 503 that says it wrote nothing (Postgres refused the write or was never reached).
_NOTHING_WRITTEN = "storage_unavailable"


def _error(response: httpx.Response) -> tuple[str | None, str]:
    """SomaMemory's `{error, detail}` body: (code, detail); (None, "") when the body is not that."""
    try:
        body = response.json()
    except ValueError:
        return None, ""
    if not isinstance(body, dict):
        return None, ""
    code = body.get("error")
    return (code if isinstance(code, str) else None), str(body.get("detail", ""))


def _refusal(response: httpx.Response) -> str:
    """The reason SomaMemory gave for a 401, for the log: the token is wrong or missing, not SomaMemory down."""
    return f": {_error(response)[0]}, check SOMABRAIN_MEMORY_TOKEN" if response.status_code == 401 else ""


class MemoryClient:
    def __init__(self, endpoint: str, timeout_s: float, token: str | None = None) -> None:
        self._http = httpx.AsyncClient(
            base_url=endpoint.rstrip("/"),
            # The service token SomaMemory's data routes require (brain.somamemory.access).
            headers={"Authorization": f"Bearer {token}"} if token else None,
            timeout=httpx.Timeout(timeout_s * 5, connect=timeout_s),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        )
        self._timeout_s = timeout_s

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, tenant: str, body: Any = None) -> httpx.Response:
        try:
            headers = {TENANT_HEADER: tenant}
            rid = request_id.get()
            if rid:  # one request id across the API and SomaMemory logs
                headers["X-Request-ID"] = rid
            return await self._http.request(method, path, json=body, headers=headers)
        except _NOT_SENT as exc:
            raise MemoryUnavailable(f"SomaMemory {method} {path} failed: {type(exc).__name__}") from exc
        except httpx.TimeoutException as exc:  # read or write timeout: the request may be under way
            raise MemoryOutcomeUnknown(f"SomaMemory {method} {path} timed out: {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:  # the connection broke or garbled once the request was on its way
            raise MemoryOutcomeUnknown(f"SomaMemory {method} {path} failed: {type(exc).__name__}",
                                       broken=True) from exc

    async def remember(
        self, tenant: str, item_id: str, content: str, metadata: dict[str, Any], importance: float
    ) -> None:
        """Store the memory under `item_id`, the caller's id; returns once SomaMemory has it (201).

        SomaMemory's writes are idempotent by id: the same write again answers 201 and stores nothing twice. So when
        the connection breaks with the outcome unknown (SomaMemory restarting, a keep-alive connection it closed),
        the write is sent once more, on a new connection, and its answer settles the outcome. A timeout is not
        resent: SomaMemory or its Postgres is slow, and a second wait would double the caller's for the same end.
        Raises MemoryConflict (another memory holds the id), MemoryQuotaExceeded (the tenant is full), MemoryRefused
        (SomaMemory refuses this body), MemoryOutcomeUnknown, or MemoryUnavailable (nothing was written).
        """
        body = {"id": item_id, "content": content, "metadata": metadata, "importance": importance}
        try:
            await self._remember_once(tenant, body)
        except MemoryOutcomeUnknown as exc:
            if not exc.broken:
                raise
            try:
                await self._remember_once(tenant, body)
            except MemoryUnavailable as again:  # the first attempt may still have landed: still unknown
                raise MemoryOutcomeUnknown(f"{exc}; sent again: {again}") from again

    async def _remember_once(self, tenant: str, body: dict[str, Any]) -> None:
        response = await self._call("POST", "/remember", tenant, body)
        status = response.status_code
        if status == 201:
            return
        code, said = _error(response)
        if status == 409 and code == "idempotency_conflict":
            raise MemoryConflict(f"SomaMemory holds another memory under {body['id']}")
        if status == 403 and code == "quota_exceeded":
            raise MemoryQuotaExceeded(said)
        if status in _BODY_REFUSED:
            raise MemoryRefused(status, code, said)
        detail = f"SomaMemory did not confirm the write (HTTP {status}{f' {code}' if code else ''}{_refusal(response)})"
        if 400 <= status < 500 or (status == 503 and code == _NOTHING_WRITTEN):
            raise MemoryUnavailable(detail)  # refused, or SomaMemory says it wrote nothing
        raise MemoryOutcomeUnknown(detail)

    async def recall(self, tenant: str, query: str, top_k: int) -> list[dict[str, Any]]:
        response = await self._call("POST", "/recall", tenant, {"query": query, "top_k": top_k})
        if response.status_code != 200:
            raise MemoryUnavailable(f"SomaMemory recall failed (HTTP {response.status_code}{_refusal(response)})")
        results: list[dict[str, Any]] = response.json()["results"]
        return results

    async def delete(self, tenant: str, item_id: str) -> bool:
        response = await self._call("DELETE", f"/memories/{item_id}", tenant)
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise MemoryUnavailable(f"SomaMemory delete failed (HTTP {response.status_code}{_refusal(response)})")
        return True

    async def health(self) -> dict[str, Any]:
        response = await self._http.get("/health", timeout=self._timeout_s)
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        # SomaMemory says whether it would accept our token: a refused one fails readiness, not the first write.
        token = body.get("service_token", "not_required")
        found: dict[str, Any] = {"ok": response.status_code == 200 and bool(body.get("ready"))
                                 and token in ("accepted", "not_required"), "status": response.status_code}
        if token in ("refused", "absent"):
            found["error"] = f"SomaMemory {token} the service token (SOMABRAIN_MEMORY_TOKEN out of step?)"
        return found
