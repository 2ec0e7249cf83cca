"""The SomaBrain API app factory and its routes.

State lives in `app.extensions["somabrain"]` (an `ApiState`, see state.py); handlers reach it with `state()`.
Every tenant route passes the gate (JWT, rate limits, then OPA: brain.api.gate) before its handler runs. A change
is acknowledged only after its audit event is committed to the outbox in the same transaction as the API's record
of the change; a delete, which cannot share a transaction with SomaMemory, is audited as `requested` before it
starts. A /remember whose SomaMemory outcome is unknown is audited as `unknown` (when Postgres allows), and its
write id comes from the request's idempotency key, so that a retry converges on the same memory.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from quart import Quart, Response, current_app, g
from quart import request as quart_request
from redis.exceptions import RedisError

from brain import __version__, metrics
from brain.api.schemas import (
    ActRequest,
    ActResponse,
    HealthResponse,
    RecallResponse,
    RememberResponse,
)
from brain.api.state import APP_NAME, ApiState, build_state
from brain.audit.events import AuditEvent
from brain.db import DB_ERRORS
from brain.embeddings import Vector, cosine_scores
from brain.errors import APIError
from brain.memory.client import (
    MemoryConflict,
    MemoryOutcomeUnknown,
    MemoryQuotaExceeded,
    MemoryRefused,
    MemoryUnavailable,
)
from brain.memory.journal import Entry, JournalError
from brain.predictor import Prediction
from brain.settings import Settings
from brain.web import common
from brain.web.clients import is_internal
from brain.web.probes import add_probe_routes
from brain.web.router import HeaderParam, Request, Router
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


IDEMPOTENCY_HEADER = "Idempotency-Key"
#: 1-128 of A-Z a-z 0-9 . _ : + / = -, bare or in double quotes (the Structured Field string of the IETF draft).
IDEMPOTENCY_KEY_PATTERN = r'^(?:[A-Za-z0-9._:+/=-]{1,128}|"[A-Za-z0-9._:+/=-]{1,128}")$'
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


def _write_key() -> str:
    """The request's idempotency key: its Idempotency-Key header, else its request id (X-Request-ID when the client
    sent a well-formed one, else the one made for this request, which the response echoes)."""
    offered = quart_request.headers.getlist(IDEMPOTENCY_HEADER)
    if not offered:
        rid: str | None = getattr(g, "request_id", None)
        return rid or uuid.uuid4().hex
    if len(offered) > 1 or not _IDEMPOTENCY_KEY.fullmatch(offered[0]):
        raise APIError(400, "invalid_idempotency_key", f"{IDEMPOTENCY_HEADER} must be one value of 1-128 of "
                       "A-Z a-z 0-9 . _ : + / = -, bare or in double quotes")
    return offered[0].strip('"')


def _write_id(tenant: str, key: str) -> str:
    """The id a /remember stores under: 128 bits of SHA-256 over the tenant and the idempotency key, as 32 lowercase
    hex digits (the memory id format). One tenant's key never names another tenant's memory."""
    return hashlib.sha256(f"somabrain/remember\0{tenant}\0{key}".encode()).hexdigest()[:32]


def _key_reused(key: str, item_id: str) -> APIError:
    return APIError(409, "idempotency_conflict", f"the idempotency key {key} was already used for a different "
                    f"memory ({item_id}); nothing was written. Use a new key for a new memory")


#: Why a /remember may be stored although it failed.
_UNCONFIRMED = "SomaMemory did not confirm the write"
_NOT_UNDONE = ("SomaMemory stored the write, which could be neither completed (working memory or the audit failed) "
               "nor undone")


async def _outcome_unknown(st: ApiState, tenant: str, item_id: str, key: str, why: str = _UNCONFIRMED) -> APIError:
    """The answer when the write may be stored, after recording it as `unknown` in the audit trail (when Postgres
    allows: no change, acknowledged or not, without its event)."""
    audited = ""
    if st.db is not None:
        try:
            await st.audit(AuditEvent(tenant=tenant, subject=_subject(), action="remember", outcome="unknown",
                                      item_id=item_id))
            audited = " (audited as unknown)"
        except DB_ERRORS as exc:
            log.error("remember %s for tenant %s has an unknown outcome and could not be audited: %s", item_id,
                      tenant, exc)
            audited = " (Postgres could not audit it either)"
    return APIError(503, "memory_outcome_unknown", f"{why}, so it may be stored under id {item_id}{audited}. Retry "
                    f"with {IDEMPOTENCY_HEADER}: {key}: the retry converges on that id, storing the memory once")


@router.route(
    "POST", "/remember", summary="Store an item in SomaMemory and working memory", body=RememberRequest,
    response=RememberResponse, status=201, also=(202,), tenant=True, errors=(409, 503), tags=("memory",),
    headers=(HeaderParam(
        IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY_PATTERN,
        "Makes the write idempotent: the same key (per tenant) always writes the same id, so a retry converges on "
        "one memory; the same key with a different body is a 409. Without it the request id (X-Request-ID) is the "
        "key.",
    ),),
    links={"DeleteRemembered": {
        "operationId": "delete_memory",
        "parameters": {"item_id": "$response.body#/id", "header.X-Tenant-ID": "$request.header.X-Tenant-ID"},
    }},
)
async def remember(req: Request, body: RememberRequest) -> Response:
    """201 once SomaMemory, working memory and the audit outbox all have it; 202 when queued in the journal.

    Every store writes by id and the id comes from the idempotency key, so a retry lands on the same memory. A 503
    says nothing was written only when that is known; when SomaMemory may hold the write (its answer was lost), the
    write goes to the journal if there is one (replay is idempotent by id: 202), else the answer is 503
    `memory_outcome_unknown`, audited as `unknown`.
    """
    st, tenant = state(), req.tenant
    assert tenant is not None
    key = _write_key()
    item_id = _write_id(tenant, key)
    journal_file: Path | None = None  # set when the write waits in the journal instead of SomaMemory
    in_doubt = False  # SomaMemory may hold the write although it did not confirm it
    if st.memory is not None:
        try:
            await st.memory.remember(tenant, item_id, body.content, body.metadata, body.importance)
        except MemoryConflict as exc:
            raise _key_reused(key, item_id) from exc
        except MemoryQuotaExceeded as exc:  # never journalled: replaying it would meet the same refusal
            raise APIError(403, "quota_exceeded", f"{exc}; nothing was written") from exc
        except MemoryRefused as exc:  # nor this: it was journalled (202) and then held back every write after it
            log.error("somamemory refused a body the api accepted (are their limits the same?): %s", exc)
            if exc.status == 413:
                raise APIError(413, "payload_too_large", f"{exc}; nothing was written") from exc
            raise APIError(422, "memory_refused", f"{exc}; nothing was written") from exc
        except MemoryUnavailable as exc:
            in_doubt = isinstance(exc, MemoryOutcomeUnknown)
            if in_doubt:
                log.warning("somamemory outcome unknown for %s: %s", item_id, exc)
            if st.journal is None:
                raise (await _outcome_unknown(st, tenant, item_id, key) if in_doubt else _memory_down(exc)) from exc
            try:  # SomaMemory is optional here: keep the write durably until it is back
                journal_file = st.journal.append([Entry(tenant=tenant, id=item_id, content=body.content,
                                                        metadata=body.metadata, importance=body.importance)])
            except (OSError, JournalError) as journal_exc:
                raise (await _outcome_unknown(st, tenant, item_id, key) if in_doubt
                       else _memory_down(exc)) from journal_exc
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
        undone = await _undo_remember(st, tenant, item_id, wm_written, journal_file)
        if in_doubt or not undone:
            raise await _outcome_unknown(st, tenant, item_id, key, _UNCONFIRMED if in_doubt else _NOT_UNDONE) from exc
        raise (_wm_down(exc) if isinstance(exc, RedisError) else _db_down(exc)) from exc
    body_out = RememberResponse(id=item_id, wm_items=count, queued=queued)
    return Response(body_out.model_dump_json(), status=202 if queued else 201, content_type="application/json")


async def _undo_remember(st: ApiState, tenant: str, item_id: str, wm_written: bool, journal_file: Path | None) -> bool:
    """Compensation, so that a 503 saying nothing was written is true; returns whether every step was confirmed.

    It runs only after SomaMemory answered 201 (or the write went to the journal instead), so the write is complete
    and an idempotent delete that succeeds leaves nothing behind. (A delete is no proof against a write whose outcome
    is unknown: a 404 cannot tell "never stored" from "not stored yet", as that write may still be on its way, to
    this replica or another. Such a write is answered `memory_outcome_unknown` instead.) False means something may
    remain, and the answer must say so.
    """
    try:
        if wm_written:
            await st.wm.delete(tenant, item_id)
        if journal_file is not None and st.journal is not None:
            st.journal.discard(journal_file)
        elif st.memory is not None:
            await st.memory.delete(tenant, item_id)
    except (RedisError, MemoryUnavailable, OSError) as exc:
        log.error("could not undo %s for tenant %s: %s", item_id, tenant, exc)
        return False
    return True


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
    novelty = _unit(1.0 - best)
    pred_error = _unit(prediction.surprise)
    salience = _unit(1.0 - (1.0 - pred_error) * (1.0 - novelty))
    return ActResponse(
        pred_error=pred_error, novelty=novelty, salience=salience, d2=max(prediction.d2, 0.0),
        provider=st.predictor.provider,
    )


def _unit(x: float) -> float:
    """`x` clamped to [0, 1], as np.clip would (which costs ~5 us on a Python float; /act clamps three)."""
    return min(max(x, 0.0), 1.0)


async def _read_and_observe(st: ApiState, tenant: str, vec: Vector) -> tuple[list[WMItem], Prediction]:
    """Working memory's items and the predictor's update in one Redis round trip (not a transaction: the two need no
    atomicity together, and their keys live in different cluster slots)."""
    raw_items, *stats = await st.round_trips([st.wm.items_command(tenant), *st.predictor.observe_commands(tenant, vec)])
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
async def health(_: Request) -> Response:
    """Public through the Ingress, so it shows booleans only; probes and operators on 127.0.0.1 see why."""
    return Response(state().health_body(is_internal()), content_type="application/json")


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
        app, router, APP_NAME, settings.max_body_bytes, tenant_resolver=st.gate, auth=not settings.disable_auth,
        metrics_port=settings.metrics_port,
    )
    return app
