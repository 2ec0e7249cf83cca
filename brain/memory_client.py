"""The API's HTTP client for SomaMemory (`SOMABRAIN_MEMORY_HTTP_ENDPOINT`)."""

from __future__ import annotations

from typing import Any

import httpx

from brain.logs import request_id
from brain.web.router import TENANT_HEADER


class MemoryUnavailable(Exception):
    """SomaMemory could not be reached or did not confirm the operation."""


class MemoryClient:
    def __init__(self, endpoint: str, timeout_s: float) -> None:
        self._http = httpx.AsyncClient(
            base_url=endpoint.rstrip("/"),
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
        except httpx.HTTPError as exc:
            raise MemoryUnavailable(f"SomaMemory {method} {path} failed: {type(exc).__name__}") from exc

    async def remember(
        self, tenant: str, item_id: str, content: str, metadata: dict[str, Any], importance: float
    ) -> None:
        response = await self._call(
            "POST",
            "/remember",
            tenant,
            {"id": item_id, "content": content, "metadata": metadata, "importance": importance},
        )
        if response.status_code != 201:
            raise MemoryUnavailable(f"SomaMemory did not confirm the write (HTTP {response.status_code})")

    async def recall(self, tenant: str, query: str, top_k: int) -> list[dict[str, Any]]:
        response = await self._call("POST", "/recall", tenant, {"query": query, "top_k": top_k})
        if response.status_code != 200:
            raise MemoryUnavailable(f"SomaMemory recall failed (HTTP {response.status_code})")
        results: list[dict[str, Any]] = response.json()["results"]
        return results

    async def delete(self, tenant: str, item_id: str) -> bool:
        response = await self._call("DELETE", f"/memories/{item_id}", tenant)
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise MemoryUnavailable(f"SomaMemory delete failed (HTTP {response.status_code})")
        return True

    async def health(self) -> dict[str, Any]:
        response = await self._http.get("/health", timeout=self._timeout_s)
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        return {"ok": response.status_code == 200 and bool(body.get("ready")), "status": response.status_code}
