"""The SomaBrain API app factory and its routes.

State lives in `app.extensions["somabrain"]` (an `ApiState`); handlers reach it with `state()`. Every dependency
is probed in the background by a `HealthMonitor`; `/health` and `/readyz` only read its snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from quart import Quart, current_app
from redis.asyncio import Redis
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
from brain.db import Database
from brain.embeddings import HashingEmbedder, cosine_scores
from brain.errors import APIError
from brain.health import Check, HealthMonitor
from brain.memory_client import MemoryClient, MemoryUnavailable
from brain.predictor import MahalPredictor, Predictor, StubPredictor
from brain.settings import Settings
from brain.web import common
from brain.web.probes import add_probe_routes
from brain.web.router import Request, Router
from brain.web.schemas import DeleteResponse, MemoryItem, RecallRequest, RememberRequest
from brain.wm import WorkingMemory

log = logging.getLogger(__name__)
APP_NAME = "api"
API_SCHEMA = "somabrain"
API_MIGRATIONS: list[str] = []


@dataclass
class ApiState:
    settings: Settings
    redis: Redis
    embedder: HashingEmbedder
    predictor: Predictor
    memory: MemoryClient | None
    db: Database | None
    wm: WorkingMemory
    monitor: HealthMonitor = field(init=False)

    def required(self) -> list[str]:
        """What gates readiness (DESIGN.md): a real predictor, Redis, SomaMemory, Postgres, and OPA if set."""
        names = ["redis", "predictor"]
        if self.settings.memory_required:
            names.append("memory")
        if self.db is not None:
            names.append("postgres")
        if self.settings.opa_url is not None:
            names.append("opa")
        return names


def state() -> ApiState:
    found: ApiState = current_app.extensions["somabrain"]
    return found


router = Router(
    title="SomaBrain API",
    version=__version__,
    description="Cognitive memory: remember, recall and act, per tenant",
)


def _wm_down(exc: Exception) -> APIError:
    log.warning("redis unavailable: %s", exc)
    return APIError(503, "working_memory_unavailable", "Redis is unavailable; nothing was written")


def _memory_down(exc: Exception) -> APIError:
    log.warning("somamemory unavailable: %s", exc)
    return APIError(503, "memory_unavailable", "SomaMemory is unavailable; nothing was written")


@router.route(
    "POST", "/remember", summary="Store an item in SomaMemory and working memory", body=RememberRequest,
    response=RememberResponse, status=201, tenant=True, errors=(503,), tags=("memory",),
)
async def remember(req: Request, body: RememberRequest) -> RememberResponse:
    st, tenant = state(), req.tenant
    assert tenant is not None
    item_id = uuid.uuid4().hex
    vec = st.embedder.embed(body.content)
    if st.memory is not None:
        try:
            await st.memory.remember(tenant, item_id, body.content, body.metadata, body.importance)
        except MemoryUnavailable as exc:
            raise _memory_down(exc) from exc
    try:
        count = await st.wm.add(tenant, item_id, body.content, body.metadata, body.importance, vec)
    except RedisError as exc:
        if st.memory is not None:  # undo the durable write so that a 503 really means "nothing written"
            try:
                await st.memory.delete(tenant, item_id)
            except MemoryUnavailable:
                log.error("could not undo memory %s for tenant %s after a Redis failure", item_id, tenant)
        raise _wm_down(exc) from exc
    return RememberResponse(id=item_id, wm_items=count)


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
            raise _memory_down(exc) from exc
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
        items, prediction = await asyncio.gather(st.wm.items(tenant), st.predictor.observe(tenant, vec))
    except RedisError as exc:
        raise APIError(503, "predictor_unavailable", "Redis is unavailable; statistics were not updated") from exc
    best = float(np.max(cosine_scores(vec, np.stack([i.vec for i in items])))) if items else 0.0
    novelty = float(np.clip(1.0 - best, 0.0, 1.0))
    pred_error = float(np.clip(prediction.surprise, 0.0, 1.0))
    salience = float(np.clip(1.0 - (1.0 - pred_error) * (1.0 - novelty), 0.0, 1.0))
    return ActResponse(
        pred_error=pred_error, novelty=novelty, salience=salience, d2=max(prediction.d2, 0.0),
        provider=st.predictor.provider,
    )


@router.route(
    "DELETE", "/memory/{item_id}", summary="Delete an item from SomaMemory and working memory",
    response=DeleteResponse, tenant=True, errors=(404, 503), tags=("memory",),
)
async def delete_memory(req: Request) -> DeleteResponse:
    st, tenant = state(), req.tenant
    assert tenant is not None
    item_id = req.params["item_id"]
    found = False
    if st.memory is not None:
        try:
            found = await st.memory.delete(tenant, item_id)
        except MemoryUnavailable as exc:
            raise _memory_down(exc) from exc
    try:
        found = await st.wm.delete(tenant, item_id) or found
    except RedisError as exc:
        raise _wm_down(exc) from exc
    if not found:
        raise APIError(404, "not_found", f"no item {item_id} for this tenant")
    return DeleteResponse(id=item_id, deleted=True)


@router.route("GET", "/health", summary="Health in the fixed shape, with per-component detail",
              response=HealthResponse, tags=("ops",))
async def health(_: Request) -> HealthResponse:
    st = state()
    return health_document(
        st.monitor.snapshot, st.predictor.provider, st.settings.strict_real, st.monitor.failing()
    )


add_probe_routes(router, lambda: state().monitor.failing())
common.add_standard_routes(router)


def _checks(st: ApiState, settings: Settings) -> dict[str, Check]:
    async def redis_check() -> dict[str, Any]:
        return {"ok": bool(await st.redis.ping())}

    async def predictor_check() -> dict[str, Any]:
        p = st.predictor
        return {"ok": p.real and p.warmed(), "provider": p.provider, "real": p.real, "warmed": p.warmed()}

    checks: dict[str, Check] = {"redis": redis_check, "predictor": predictor_check}
    if st.memory is not None:
        memory = st.memory

        async def memory_check() -> dict[str, Any]:
            return await memory.health()

        checks["memory"] = memory_check
    if st.db is not None:
        db = st.db

        async def postgres_check() -> dict[str, Any]:
            return {"ok": await db.ping()}

        checks["postgres"] = postgres_check
    if settings.opa_url is not None:
        opa_health = settings.opa_url.rstrip("/") + "/health"

        async def opa_check() -> dict[str, Any]:
            async with httpx.AsyncClient(timeout=settings.dependency_timeout_s) as client:
                response = await client.get(opa_health)
            return {"ok": response.status_code == 200}

        checks["opa"] = opa_check
    return checks


def create_app(settings: Settings | None = None) -> Quart:
    settings = settings or Settings.from_env()
    assert settings.redis_url is not None  # check_strict() guarantees it
    timeout = settings.dependency_timeout_s
    redis = Redis.from_url(
        settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=10
    )
    predictor: Predictor
    if settings.predictor_provider == "mahal":
        predictor = MahalPredictor(
            redis, settings.embed_dim, settings.predictor_alpha, settings.batch_max, settings.batch_window_ms / 1000
        )
    else:
        predictor = StubPredictor()
    st = ApiState(
        settings=settings,
        redis=redis,
        embedder=HashingEmbedder(settings.embed_dim),
        predictor=predictor,
        memory=MemoryClient(settings.memory_http_endpoint, timeout) if settings.memory_http_endpoint else None,
        db=Database(settings.postgres_dsn, API_SCHEMA, API_MIGRATIONS, timeout) if settings.postgres_dsn else None,
        wm=WorkingMemory(redis, settings.embed_dim, settings.wm_capacity, settings.wm_ttl_seconds),
    )
    st.monitor = HealthMonitor(
        APP_NAME, _checks(st, settings), settings.health_interval_s, timeout, required=st.required()
    )

    app = Quart("somabrain")
    app.extensions["somabrain"] = st

    @app.before_serving
    async def _start() -> None:
        await st.predictor.start()
        await st.monitor.refresh()
        st.monitor.start()

    @app.after_serving
    async def _stop() -> None:
        await st.monitor.stop()
        await st.predictor.stop()
        if st.memory is not None:
            await st.memory.aclose()
        if st.db is not None:
            await st.db.close()
        await st.redis.aclose()
        metrics.READY.labels(APP_NAME).set(0)

    common.install(app, router, APP_NAME, settings.max_body_bytes)
    return app
