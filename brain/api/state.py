"""The API's runtime state: every client and background task, built from Settings and started with the app."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from brain.api.gate import Gate
from brain.api.schemas import health_document
from brain.audit import store as audit_store
from brain.audit.events import AuditEvent
from brain.audit.publisher import OutboxPublisher
from brain.audit.refusals import RefusalAudit
from brain.audit.writer import AuditWriter
from brain.auth import JWTVerifier, load_verifier
from brain.db import Database
from brain.embeddings import HashingEmbedder
from brain.errors import ConfigError
from brain.health import Check, HealthMonitor
from brain.memory.client import MemoryClient
from brain.memory.journal import JournalError, MemoryJournal
from brain.memory.replay import JournalReplay
from brain.oidc import JWKSCache
from brain.policy import PolicyClient
from brain.predictor import MahalPredictor, Predictor, StubPredictor
from brain.ratelimit import RateLimiter
from brain.roundtrip import RoundTrips
from brain.settings import Settings, kafka_bootstrap
from brain.web.clients import networks
from brain.wm import WorkingMemory

APP_NAME = "api"


@dataclass
class ApiState:
    settings: Settings
    redis: Redis
    embedder: HashingEmbedder
    predictor: Predictor
    wm: WorkingMemory
    gate: Gate
    #: /act's Redis round trip (working memory and the predictor together), on connections of its own.
    round_trips: RoundTrips
    memory: MemoryClient | None = None
    db: Database | None = None
    policy: PolicyClient | None = None
    publisher: OutboxPublisher | None = None
    journal: MemoryJournal | None = None
    #: The OIDC issuer's key cache, when auth verifies with one (its refresh task lives as long as the app).
    jwks: JWKSCache | None = None
    audit_writer: AuditWriter | None = None
    refusals: RefusalAudit | None = None
    monitor: HealthMonitor = field(init=False)
    replayer: JournalReplay | None = field(default=None, init=False)
    #: The /health body per audience (internal or not), with the snapshot it was rendered from.
    _health: dict[bool, tuple[dict[str, Any], bytes]] = field(default_factory=dict, init=False, repr=False)

    def required(self) -> list[str]:
        """What gates readiness (DESIGN.md): a real predictor, Redis, SomaMemory, Postgres, OPA if set; Kafka opt-in."""
        names = ["redis", "predictor"]
        if self.settings.memory_required:
            names.append("memory")
        if self.db is not None:
            names.append("postgres")
        if self.policy is not None:
            names.append("opa")
        if self.jwks is not None:  # no key loaded yet: no token could be verified
            names.append("jwks")
        if self.publisher is not None and self.settings.kafka_required:
            names.append("kafka")
        return names

    def health_body(self, internal: bool) -> bytes:
        """The /health document as JSON, rendered once per snapshot: a refresh replaces the monitor's snapshot (it
        never changes one in place), so between refreshes every request gets the same bytes."""
        snapshot = self.monitor.snapshot
        cached = self._health.get(internal)
        if cached is None or cached[0] is not snapshot:
            document = health_document(snapshot, self.predictor.provider, self.settings.strict_real,
                                       self.monitor.failing(), internal=internal)
            cached = (snapshot, document.model_dump_json().encode())
            self._health[internal] = cached
        return cached[1]

    async def audit(self, event: AuditEvent, index: audit_store.Index | None = None, queued: bool = False) -> None:
        """Commit `event` (with the API's record of the change, for `index`) atomically; no-op without Postgres.

        Events with no index row (e.g. /act) go through the group-commit writer: one statement per batch.
        """
        if self.db is None:
            return
        if index is None and self.audit_writer is not None:
            await self.audit_writer.write(event)
        else:
            async with self.db.pool.acquire() as conn:
                await audit_store.commit(conn, event, topic=self.audit_topic, index=index, queued=queued)
        if self.publisher is not None:
            self.publisher.notify()

    @property
    def audit_topic(self) -> str | None:
        """The Kafka topic events are queued for, or None when no publisher drains an outbox."""
        return self.settings.audit_topic if self.publisher is not None else None

    async def start(self) -> None:
        await self.predictor.start()
        if self.jwks is not None:
            self.jwks.start()
        if self.journal is not None:
            self.journal.ensure()
        await self.monitor.refresh()
        self.monitor.start()
        if self.audit_writer is not None:
            self.audit_writer.start()
        if self.refusals is not None:
            self.refusals.start()
        if self.publisher is not None:
            self.publisher.start()
        if self.journal is not None and self.memory is not None:
            self.replayer = JournalReplay(self.journal, self.memory, self.settings.health_interval_s,
                                          lambda: bool(self.monitor.snapshot.get("memory", {}).get("ok")))
            self.replayer.start()

    async def stop(self) -> None:
        if self.replayer is not None:
            await self.replayer.stop()
        if self.jwks is not None:
            await self.jwks.stop()
        await self.monitor.stop()
        if self.refusals is not None:  # its last window goes through the writer, so before the writer stops
            await self.refusals.stop()
        if self.audit_writer is not None:
            await self.audit_writer.stop()
        if self.publisher is not None:
            await self.publisher.stop()
        await self.predictor.stop()
        for closer in (self.memory, self.policy):
            if closer is not None:
                await closer.aclose()
        if self.db is not None:
            await self.db.close()
        await self.round_trips.aclose()
        await self.redis.aclose()


def load_jwt_verifier(settings: Settings) -> JWTVerifier | None:
    """The JWT verifier auth needs, or None with auth disabled; ConfigError for a missing or bad key file, or a bad
    OIDC setting. With an OIDC issuer, its keys are a JWKSCache that fetches nothing until it is started."""
    if settings.disable_auth:
        return None
    issuer, audience, algorithms = settings.jwt_expected_issuer, settings.jwt_audience, (settings.jwt_algorithm,)
    assert issuer and audience  # check_api()
    if settings.jwt_oidc_issuer is not None:
        keys = JWKSCache(
            settings.jwt_oidc_issuer, algorithms=algorithms, ca_file=settings.jwt_oidc_ca_file,
            min_refresh_s=settings.jwt_jwks_min_refresh_s, max_age_s=settings.jwt_jwks_max_age_s,
        )
        return JWTVerifier(keys, issuer=issuer, audience=audience, algorithms=algorithms,
                           tenant_claim=settings.jwt_tenant_claim)
    assert settings.jwt_public_key_path  # check_api()
    return load_verifier(
        settings.jwt_public_key_path, issuer=issuer, audience=audience, algorithms=algorithms,
        tenant_claim=settings.jwt_tenant_claim,
    )


def preflight(settings: Settings) -> None:
    """What the CLI checks before any worker starts, beyond Settings: the JWT key and the journal directory."""
    load_jwt_verifier(settings)
    if settings.journal_enabled:
        try:
            MemoryJournal(settings.journal_dir).ensure()
        except JournalError as exc:
            raise ConfigError(f"SOMABRAIN_JOURNAL_DIR={settings.journal_dir}: {exc}") from None


def build_state(settings: Settings) -> ApiState:
    """Construct every client from settings. Raises ConfigError (e.g. an unreadable JWT key) before serving."""
    timeout = settings.dependency_timeout_s
    assert settings.redis_url is not None  # check_api() guarantees it
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
    verifier = load_jwt_verifier(settings)
    jwks = verifier.keys if verifier is not None and isinstance(verifier.keys, JWKSCache) else None
    policy = (
        PolicyClient(settings.opa_url, timeout=settings.policy_timeout_s, cache_ttl=settings.policy_cache_ttl_s)
        if settings.opa_url else None
    )
    db = (
        Database(settings.postgres_dsn, audit_store.SCHEMA, audit_store.MIGRATIONS, timeout)
        if settings.postgres_dsn else None
    )
    tenants = RateLimiter(redis, settings.rate_limit_rps, settings.rate_limit_burst, settings.rate_limit_fail_open)
    addresses = RateLimiter(redis, settings.rate_limit_address_rps, settings.rate_limit_address_burst,
                            settings.rate_limit_fail_open, scope="address")
    st = ApiState(
        settings=settings,
        redis=redis,
        embedder=HashingEmbedder(settings.embed_dim),
        predictor=predictor,
        wm=WorkingMemory(redis, settings.embed_dim, settings.wm_capacity, settings.wm_ttl_seconds,
                         settings.wm_max_bytes),
        gate=Gate(verifier, policy, tenants, addresses, networks(settings.trusted_proxies), APP_NAME),
        round_trips=RoundTrips(settings.redis_url, timeout),
        memory=MemoryClient(settings.memory_http_endpoint, timeout,
                            settings.memory_tokens[0] if settings.memory_tokens else None)
        if settings.memory_http_endpoint else None,
        db=db,
        policy=policy,
        publisher=(
            OutboxPublisher(db, kafka_bootstrap(settings.kafka_url), settings.audit_topic, kafka=settings.kafka)
            if db is not None and settings.kafka_url else None
        ),
        journal=MemoryJournal(settings.journal_dir) if settings.journal_enabled else None,
        jwks=jwks,
    )
    if db is not None:
        st.audit_writer = AuditWriter(db, st.audit_topic)
        st.refusals = st.gate.refusals = RefusalAudit(st.audit, settings.refusal_audit_window_s)
    st.monitor = HealthMonitor(APP_NAME, _checks(st), settings.health_interval_s, timeout, required=st.required())
    return st


def _checks(st: ApiState) -> dict[str, Check]:
    async def redis_check() -> dict[str, Any]:
        return {"ok": bool(await st.redis.ping())}

    async def predictor_check() -> dict[str, Any]:
        p = st.predictor
        return {"ok": p.real and p.warmed(), "provider": p.provider, "real": p.real, "warmed": p.warmed()}

    checks: dict[str, Check] = {"redis": redis_check, "predictor": predictor_check}
    if st.memory is not None:
        checks["memory"] = st.memory.health
    if st.db is not None:
        db = st.db

        async def postgres_check() -> dict[str, Any]:
            return {"ok": await db.ping()}

        checks["postgres"] = postgres_check
    if st.policy is not None:
        policy = st.policy

        async def opa_check() -> dict[str, Any]:
            return {"ok": await policy.ping(), "fail_closed": True}

        checks["opa"] = opa_check
    if st.publisher is not None:
        checks["kafka"] = st.publisher.health
    if st.journal is not None:
        journal = st.journal

        async def journal_check() -> dict[str, Any]:
            return {"ok": True, "pending_files": len(journal.pending())}

        checks["journal"] = journal_check
    if st.jwks is not None:
        checks["jwks"] = st.jwks.health
    return checks

