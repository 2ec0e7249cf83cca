"""The SomaMemory app (port 9595): remember, recall and delete memories, durably, per tenant."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import Field
from quart import Quart, current_app

from brain import __version__, metrics, tasks
from brain.db import DB_ERRORS, Database
from brain.embeddings import HashingEmbedder
from brain.errors import APIError
from brain.health import HealthMonitor
from brain.settings import Settings
from brain.somamemory.access import caller_standing, token_gate
from brain.somamemory.schema import MIGRATIONS, SCHEMA
from brain.somamemory.store import IdempotencyConflict, MemoryStore, Quota, QuotaExceeded, WriteInDoubt
from brain.web import common
from brain.web.probes import add_probe_routes
from brain.web.router import Request, Router
from brain.web.schemas import (
    ID_PATTERN,
    DeleteResponse,
    MemoryItem,
    RecallRequest,
    RememberRequest,
    Strict,
)

log = logging.getLogger(__name__)
APP_NAME = "somamemory"


class StoreRequest(RememberRequest):
    id: str | None = Field(
        default=None, pattern=ID_PATTERN,
        description="Caller-chosen id. Writes never replace: the same id again with the same memory is a retry "
        "(201 again), with another memory a 409",
    )


class StoreResponse(Strict):
    id: str = Field(pattern=ID_PATTERN)


class RecallResults(Strict):
    results: list[MemoryItem]


class MemoryHealth(Strict):
    ok: bool
    ready: bool
    service: str
    components: dict[str, dict[str, Any]]
    #: The caller's own token: not_required, accepted, refused or absent (brain.somamemory.access).
    service_token: str


@dataclass
class MemoryState:
    settings: Settings
    db: Database
    store: MemoryStore
    monitor: HealthMonitor

    def failing(self) -> list[str]:
        return self.monitor.failing()


def state() -> MemoryState:
    found: MemoryState = current_app.extensions["somamemory"]
    return found


router = Router(
    title="SomaMemory", version=__version__, tenant_errors=(401,),
    description="Durable per-tenant memory store. Data routes need Authorization: Bearer <the service token>, "
    "which only the API holds (brain.somamemory.access).",
)


def _unavailable(exc: Exception) -> APIError:
    log.warning("postgres unavailable: %s", exc)
    return APIError(503, "storage_unavailable", "Postgres is unavailable; nothing was written")


@router.route(
    "POST", "/remember", summary="Store a memory durably", body=StoreRequest, response=StoreResponse,
    status=201, tenant=True, errors=(403, 409, 503), tags=("memory",),
)
async def remember(req: Request, body: StoreRequest) -> StoreResponse:
    """201 once Postgres has committed it, or already had this very memory under this id (a retry). 403
    `quota_exceeded` (the tenant holds SOMABRAIN_MEMORY_QUOTA_ITEMS memories or _BYTES bytes), 409
    `idempotency_conflict` and 503 `storage_unavailable`: nothing was written; 503 `storage_outcome_unknown`: Postgres
    took the write but gave no verdict, so it may be stored: sending the same write again settles it."""
    assert req.tenant is not None
    item_id = body.id or uuid.uuid4().hex
    try:
        await state().store.put(req.tenant, item_id, body.content, body.metadata, body.importance)
    except IdempotencyConflict as exc:
        raise APIError(409, "idempotency_conflict", f"{exc}; nothing was written") from exc
    except QuotaExceeded as exc:
        raise APIError(403, "quota_exceeded", str(exc)) from exc
    except WriteInDoubt as exc:
        log.warning("write outcome unknown: %s", exc)
        raise APIError(503, "storage_outcome_unknown", f"Postgres did not confirm the write of {item_id}, which "
                       "may be stored; sending the same write again is safe and settles it") from exc
    except DB_ERRORS as exc:
        raise _unavailable(exc) from exc
    return StoreResponse(id=item_id)


@router.route(
    "POST", "/recall", summary="Memories closest to a query", body=RecallRequest, response=RecallResults,
    tenant=True, errors=(503,), tags=("memory",),
)
async def recall(req: Request, body: RecallRequest) -> RecallResults:
    assert req.tenant is not None
    try:
        found = await state().store.recall(req.tenant, body.query, body.top_k)
    except DB_ERRORS as exc:
        raise _unavailable(exc) from exc
    return RecallResults(results=[MemoryItem(**vars(item)) for item in found])


@router.route(
    "DELETE", "/memories/{item_id}", summary="Delete a memory", response=DeleteResponse, tenant=True,
    errors=(404, 503), tags=("memory",),
)
async def delete_memory(req: Request) -> DeleteResponse:
    assert req.tenant is not None
    item_id = req.params["item_id"]
    try:
        deleted = await state().store.delete(req.tenant, item_id)
    except DB_ERRORS as exc:
        raise _unavailable(exc) from exc
    if not deleted:
        raise APIError(404, "not_found", f"no memory {item_id} for this tenant")
    return DeleteResponse(id=item_id, deleted=True)


@router.route("GET", "/health", summary="Health with per-component detail", response=MemoryHealth, tags=("ops",))
async def health(_: Request) -> MemoryHealth:
    st = state()
    return MemoryHealth(ok=True, ready=not st.failing(), service=APP_NAME, components=st.monitor.snapshot,
                        service_token=caller_standing(st.settings.memory_tokens))


add_probe_routes(router, lambda: state().failing())
common.add_standard_routes(router)


def create_app(settings: Settings | None = None) -> Quart:
    settings = settings or Settings.from_env(app="memory")
    assert settings.postgres_dsn is not None
    db = Database(settings.postgres_dsn, SCHEMA, MIGRATIONS, timeout_s=settings.dependency_timeout_s)

    store = MemoryStore(db, HashingEmbedder(settings.embed_dim),
                        Quota(settings.memory_quota_items, settings.memory_quota_bytes))

    async def check_postgres() -> dict[str, Any]:
        return {"ok": await db.ping()}

    warm_up_failure: list[str] = []

    async def check_recall_index() -> dict[str, Any]:
        """Ready once this worker has built every tenant's index: a replica takes traffic with its indexes built,
        rather than building a big tenant's on the first request that needs it."""
        stats = store.index.stats()
        found = {"ok": store.warm, "tenants": stats.tenants, "vectors": stats.vectors, "bytes": stats.nbytes}
        return found | ({"error": warm_up_failure[0]} if warm_up_failure else {})

    monitor = HealthMonitor(
        APP_NAME, {"postgres": check_postgres, "recall_index": check_recall_index}, settings.health_interval_s,
        settings.dependency_timeout_s,
    )
    app = Quart(APP_NAME)
    app.extensions["somamemory"] = MemoryState(settings, db, store, monitor)
    warming: list[asyncio.Task[None]] = []

    async def warm_up() -> None:
        try:
            await store.warm_up()
        except Exception as exc:  # not Postgres being away (warm_up waits for it): bad data or a bug; /health says it
            log.exception("recall index warm-up failed")
            warm_up_failure.append(f"warm-up failed: {type(exc).__name__}: {exc}"[:300])
        await monitor.refresh()  # ready now, not at the next health interval

    @app.before_serving
    async def _start() -> None:
        await monitor.refresh()
        monitor.start()
        warming.append(asyncio.create_task(warm_up(), name=f"{APP_NAME}-warm-up"))

    @app.after_serving
    async def _stop() -> None:
        await tasks.cancel(warming.pop() if warming else None)
        await monitor.stop()
        await db.close()
        metrics.READY.labels(APP_NAME).set(0)

    if not settings.memory_tokens:
        log.warning("SOMABRAIN_MEMORY_TOKEN is not set: SomaMemory serves any caller's data requests (dev only)")
    resolver = token_gate(settings.memory_tokens) if settings.memory_tokens else None
    common.install(app, router, APP_NAME, settings.max_body_bytes, tenant_resolver=resolver,
                   metrics_port=settings.metrics_port)
    return app
