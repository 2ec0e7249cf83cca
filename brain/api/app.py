"""The SomaBrain API app factory and its routes.

State lives in `app.extensions["somabrain"]` (an `ApiState`, see state.py); handlers reach it with `state()`.
Every tenant route passes the gate (JWT, rate limits, then OPA: brain.api.gate) before its handler runs. A change
is acknowledged only after its audit event is committed to the outbox in the same transaction as the API's record
of the change; a delete, which cannot share a transaction with SomaMemory, is audited as `requested` before it
starts.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from quart import Quart, Response, current_app, g
from redis.exceptions import RedisError

from brain import __version__, metrics
from brain.api.schemas import (
    ActRequest,
    ActResponse,
    HealthResponse,
    RecallResponse,
    RememberResponse,
    health_document,
)
from brain.api.state import APP_NAME, ApiState, build_state
from brain.audit.events import AuditEvent
from brain.audit.journal import JournalError
from brain.db import DB_ERRORS
from brain.embeddings import Vector, cosine_scores
from brain.errors import APIError
from brain.memory_client import MemoryUnavailable
from brain.predictor import Prediction
from brain.settings import Settings
from brain.web import common
from brain.web.clients import is_internal
from brain.web.probes import add_probe_routes
from brain.web.router import Request, Router
from brain.web.schemas import DeleteResponse, MemoryItem, RecallRequest, RememberRequest
from brain.wm import WMItem

log = logging.getLogger(__name__)
_WRITE_ERRORS: tuple[type[Exception], ...] = (RedisError, *DB_ERRORS)


def state() -> ApiState:
    found: ApiState = current_app.extensions["somabrain"]
    return found


def _subject() -> str:
    principal = getattr(g, "principal", None)
    return principal.subject if principal is not None else "unknown"


router = Router(
    title="SomaBrain API",
    version=__version__,
    description="Cognitive memory: remember, recall and act, per tenant",
    tenant_errors=(401, 403, 429, 503),
)


def _wm_down(exc: Exception) -> APIError:
    log.warning("redis unavailable: %s", exc)
    return APIError(503, "working_memory_unavailable", "Redis is unavailable; nothing was written")


def _memory_down(exc: Exception) -> APIError:
    log.warning("somamemory unavailable: %s", exc)
    return APIError(503, "memory_unavailable", "SomaMemory is unavailable; nothing was written")


def _db_down(exc: Exception) -> APIError:
    log.warning("postgres unavailable: %s", exc)
    return APIError(503, "audit_unavailable", "Postgres is unavailable, so the change cannot be audited; "
                    "nothing was written")


@router.route(
    "POST", "/remember", summary="Store an item in SomaMemory and working memory", body=RememberRequest,
    response=RememberResponse, status=201, also=(202,), tenant=True, tags=("memory",),
    links={"DeleteRemembered": {
        "operationId": "delete_memory",
        "parameters": {"item_id": "$response.body#/id", "header.X-Tenant-ID": "$request.header.X-Tenant-ID"},
    }},
)
async def remember(req: Request, body: RememberRequest) -> Response:
    """201 once SomaMemory, working memory and the audit outbox all have it; 202 when queued in the journal."""
    st, tenant = state(), req.tenant
    assert tenant is not None
    item_id = uuid.uuid4().hex
    journal_file: Path | None = None  # set when the write waits in the journal instead of SomaMemory
    if st.memory is not None:
        try:
            await st.memory.remember(tenant, item_id, body.content, body.metadata, body.importance)
        except MemoryUnavailable as exc:
            if st.journal is None:
                raise _memory_down(exc) from exc
            try:  # SomaMemory is optional here: keep the write durably until it is back
                journal_file = st.journal.append([{"tenant": tenant, "id": item_id, "content": body.content,
                                                   "metadata": body.metadata, "importance": body.importance}])
            except (OSError, JournalError) as journal_exc:
                raise _memory_down(exc) from journal_exc
            metrics.JOURNAL_QUEUED.inc()
    queued = journal_file is not None
    wm_written = False
    try:
        count = await st.wm.add(tenant, item_id, body.content, body.metadata, body.importance,
                                st.embedder.embed(body.content))
        wm_written = True
        event = AuditEvent(tenant=tenant, subject=_subject(), action="remember",
                           outcome="queued" if queued else "ok", item_id=item_id)
        await st.audit(event, "remember", queued)
    except _WRITE_ERRORS as exc:
        await _undo_remember(st, tenant, item_id, wm_written, journal_file)
        raise (_wm_down(exc) if isinstance(exc, RedisError) else _db_down(exc)) from exc
    body_out = RememberResponse(id=item_id, wm_items=count, queued=queued)
    return Response(body_out.model_dump_json(), status=202 if queued else 201, content_type="application/json")


async def _undo_remember(st: ApiState, tenant: str, item_id: str, wm_written: bool, journal_file: Path | None) -> None:
    """Best-effort compensation, so that a 503 really means nothing stayed written (nor will be replayed)."""
    try:
        if wm_written:
            await st.wm.delete(tenant, item_id)
        if journal_file is not None and st.journal is not None:
            st.journal.discard(journal_file)
        elif st.memory is not None:
            await st.memory.delete(tenant, item_id)
    except (RedisError, MemoryUnavailable, OSError) as exc:
        log.error("could not undo %s for tenant %s: %s", item_id, tenant, exc)


@router.route(
    "POST", "/recall", summary="Items closest to a query, from working memory and SomaMemory", body=RecallRequest,
    response=RecallResponse, tenant=True, errors=(503,), tags=("memory",),
)
async def recall(req: Request, body: RecallRequest) -> RecallResponse:
    st, tenant = state(), req.tenant
    assert tenant is not None
    query = st.embedder.embed(body.query)
    try:
        wm_hits = await st.wm.recall(tenant, query, body.top_k)
    except RedisError as exc:
        raise _wm_down(exc) from exc
    memory_hits: list[dict[str, Any]] = []
    if st.memory is not None:
        try:
            memory_hits = await st.memory.recall(tenant, body.query, body.top_k)
        except MemoryUnavailable as exc:
            if st.settings.memory_required:
                raise _memory_down(exc) from exc
            log.warning("recall served from working memory only: %s", exc)
    return RecallResponse(
        wm=[
            MemoryItem(id=item.id, content=item.content, metadata=item.metadata, importance=item.importance,
                       score=score)
            for item, score in wm_hits
        ],
        memory=[MemoryItem.model_validate(hit, strict=False) for hit in memory_hits],
    )


@router.route(
    "POST", "/act", summary="Score a task with the predictor: prediction error, novelty, salience",
    body=ActRequest, response=ActResponse, tenant=True, errors=(503,), tags=("predictor",),
)
async def act(req: Request, body: ActRequest) -> ActResponse:
    st, tenant = state(), req.tenant
    assert tenant is not None
    vec = st.embedder.embed(body.task)
    try:
        items, prediction = await _read_and_observe(st, tenant, vec)
    except RedisError as exc:
        raise APIError(503, "predictor_unavailable", "Redis is unavailable; statistics were not updated") from exc
    try:
        await st.audit(AuditEvent(tenant=tenant, subject=_subject(), action="act", outcome="ok"))
    except DB_ERRORS as exc:
        raise _db_down(exc) from exc
    best = float(np.max(cosine_scores(vec, np.stack([i.vec for i in items])))) if items else 0.0
    novelty = float(np.clip(1.0 - best, 0.0, 1.0))
    pred_error = float(np.clip(prediction.surprise, 0.0, 1.0))
    salience = float(np.clip(1.0 - (1.0 - pred_error) * (1.0 - novelty), 0.0, 1.0))
    return ActResponse(
        pred_error=pred_error, novelty=novelty, salience=salience, d2=max(prediction.d2, 0.0),
        provider=st.predictor.provider,
    )


async def _read_and_observe(st: ApiState, tenant: str, vec: Vector) -> tuple[list[WMItem], Prediction]:
    """Working memory's items and the predictor's update in one Redis round trip (a pipeline, not a transaction:
    the two need no atomicity together, and their keys live in different cluster slots)."""
    async with st.redis.pipeline(transaction=False) as pipe:
        st.wm.queue_items(pipe, tenant)
        st.predictor.queue_observe(pipe, tenant, vec)
        raw_items, *stats = await pipe.execute()
    return st.wm.decode_items(raw_items), await st.predictor.scored(stats, vec)


@router.route(
    "DELETE", "/memory/{item_id}", summary="Delete an item from SomaMemory and working memory",
    response=DeleteResponse, tenant=True, errors=(404, 503), tags=("memory",),
)
async def delete_memory(req: Request) -> DeleteResponse:
    """Audit the request before anything is deleted, then the outcome: no delete ever happens without its event.

    A 503 before the first event is committed means nothing was deleted; after it, the detail says what is known.
    """
    st, tenant = state(), req.tenant
    assert tenant is not None
    item_id = req.params["item_id"]
    try:
        await st.audit(AuditEvent(tenant=tenant, subject=_subject(), action="delete", outcome="requested",
                                  item_id=item_id))
    except DB_ERRORS as exc:
        raise _db_down(exc) from exc
    try:
        found = await _delete_everywhere(st, tenant, item_id)
    except (MemoryUnavailable, RedisError, OSError) as exc:
        log.warning("delete of %s for tenant %s interrupted: %s", item_id, tenant, exc)
        raise APIError(503, "delete_incomplete", "A store failed during the delete, so the item may be partly "
                       "deleted; the request is audited. Retry the DELETE: it is idempotent") from exc
    try:
        await st.audit(AuditEvent(tenant=tenant, subject=_subject(), action="delete",
                                  outcome="ok" if found else "not_found", item_id=item_id),
                       "delete" if found else None)
    except DB_ERRORS as exc:
        log.warning("postgres unavailable after deleting %s: %s", item_id, exc)
        done = "The item was deleted" if found else "No such item was found"
        raise APIError(503, "audit_incomplete", f"{done} and the request is audited, but Postgres failed before "
                       "the outcome was recorded. Retry the DELETE: it is idempotent") from exc
    if not found:
        raise APIError(404, "not_found", f"no item {item_id} for this tenant")
    return DeleteResponse(id=item_id, deleted=True)


async def _delete_everywhere(st: ApiState, tenant: str, item_id: str) -> bool:
    """Delete from the journal (tombstone), SomaMemory and working memory; True when any of them held the item."""
    found = st.journal is not None and st.journal.forget(tenant, item_id)
    if st.memory is not None:
        found = await st.memory.delete(tenant, item_id) or found
    return await st.wm.delete(tenant, item_id) or found


@router.route("GET", "/health", summary="Health in the fixed shape; the detail (errors) only from inside the workload",
              response=HealthResponse, tags=("ops",))
async def health(_: Request) -> HealthResponse:
    """Public through the Ingress, so it shows booleans only; probes and operators on 127.0.0.1 see why."""
    st = state()
    return health_document(
        st.monitor.snapshot, st.predictor.provider, st.settings.strict_real, st.monitor.failing(),
        internal=is_internal(),
    )


add_probe_routes(router, lambda: state().monitor.failing())
common.add_standard_routes(router)


def create_app(settings: Settings | None = None) -> Quart:
    settings = settings or Settings.from_env()
    st = build_state(settings)
    app = Quart("somabrain")
    app.extensions["somabrain"] = st

    @app.before_serving
    async def _start() -> None:
        await st.start()

    @app.after_serving
    async def _stop() -> None:
        await st.stop()
        metrics.READY.labels(APP_NAME).set(0)

    common.install(
        app, router, APP_NAME, settings.max_body_bytes, tenant_resolver=st.gate, auth=not settings.disable_auth
    )
    return app
