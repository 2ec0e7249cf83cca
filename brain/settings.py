"""Typed settings read from the `SOMABRAIN_*` environment variables.

`Settings.from_env()` is the only place that reads the environment. Every problem becomes a `ConfigError` whose
message is one line naming the variable, so that the CLI can print it and exit non-zero without a traceback.

The strict-real switches (see DESIGN.md):
- `SOMABRAIN_STRICT_REAL=1`: no stub component may serve; `PREDICTOR_PROVIDER=stub` is a start-up error.
- `SOMABRAIN_FORCE_FULL_STACK=1`: every dependency URL (Redis, Postgres, Kafka, OPA) must be set.
- `SOMABRAIN_REQUIRE_MEMORY=1`: `SOMABRAIN_MEMORY_HTTP_ENDPOINT` must be set and SomaMemory gates readiness.

Kafka (`SOMABRAIN_KAFKA_*`, see `KafkaSettings`): TLS and SASL for the audit publisher, and the audit topic's
replication. With `SOMABRAIN_ENV=prod` the topic is the operator's: by default the service does not create it.

`SOMABRAIN_ENV=prod` alone turns auth on, and nothing else set beside it (the `somabrain-overrides` ConfigMap
included) can turn it off. Auth on needs `SOMABRAIN_OPA_URL`: the token's roles mean something only to the policy.
Its JWT keys come from exactly one of PEM files (`SOMABRAIN_JWT_PUBLIC_KEY_PATH`) or an OpenID Connect issuer
(`SOMABRAIN_JWT_OIDC_ISSUER`, see brain.oidc).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast
from urllib.parse import urlsplit

from brain.errors import ConfigError
from brain.web.schemas import DEFAULT_MAX_BODY_BYTES

PREFIX = "SOMABRAIN_"
log = logging.getLogger(__name__)
PredictorProvider = Literal["mahal", "stub"]
Environment = Literal["dev", "prod"]
AppName = Literal["api", "memory"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(PREFIX + name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{PREFIX}{name}={raw!r}: expected 1 or 0 (also true/false, yes/no, on/off)")


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(PREFIX + name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}={raw!r}: expected a whole number") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{PREFIX}{name}={value}: must be between {lo} and {hi}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(PREFIX + name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}={raw!r}: expected a number") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{PREFIX}{name}={value}: must be between {lo} and {hi}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = env.get(PREFIX + name)
    value = default if raw is None or raw.strip() == "" else raw.strip().lower()
    if value not in allowed:
        raise ConfigError(f"{PREFIX}{name}={raw!r}: expected one of {', '.join(allowed)}")
    return value


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...], *, need_port: bool = False) -> str | None:
    """Return the URL in `SOMABRAIN_<name>`, or None when unset; malformed values are a ConfigError."""
    raw = env.get(PREFIX + name)
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip()
    shown = _redact(value)
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}{name}={shown!r}: malformed URL ({exc})") from None
    if parts.scheme not in schemes:
        raise ConfigError(
            f"{PREFIX}{name}={shown!r}: scheme must be one of {', '.join(s + '://' for s in schemes)}"
        )
    if not parts.hostname:
        raise ConfigError(f"{PREFIX}{name}={shown!r}: malformed URL (no host)")
    if need_port and port is None:
        raise ConfigError(f"{PREFIX}{name}={shown!r}: malformed URL (no port)")
    return value


def key_url_problem(url: str) -> str | None:
    """Why JWT keys may not be fetched from `url` (None: they may): https, or plain http to a loopback address only
    (127.0.0.0/8, ::1, localhost: tests and dev), and no credentials in the URL. Also applied to the `jwks_uri` an
    issuer's discovery document names (brain.oidc)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a malformed port raises here)
    except ValueError as exc:
        return f"malformed URL ({exc})"
    if not parts.hostname:
        return "malformed URL (no host)"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and _loopback(parts.hostname):
        return None
    return "must be an https:// URL (plain http:// only to a loopback address such as 127.0.0.1)"


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: Settings that only mean something with `SOMABRAIN_JWT_OIDC_ISSUER`.
_OIDC_ONLY = ("JWT_OIDC_CA_FILE", "JWT_JWKS_MIN_REFRESH", "JWT_JWKS_MAX_AGE")


def _oidc_issuer(env: Mapping[str, str]) -> str | None:
    """`SOMABRAIN_JWT_OIDC_ISSUER`: an issuer identifier (OpenID Connect Discovery 1.0: no query, no fragment)."""
    value = (env.get(PREFIX + "JWT_OIDC_ISSUER") or "").strip()
    if not value:
        for name in _OIDC_ONLY:
            if (env.get(PREFIX + name) or "").strip():
                raise ConfigError(
                    f"{PREFIX}{name} is set but {PREFIX}JWT_OIDC_ISSUER is not (it applies to an OIDC issuer's "
                    f"keys only); set the issuer, or unset {PREFIX}{name}"
                )
        return None
    problem = key_url_problem(value)
    if problem is None and ("?" in value or "#" in value):
        problem = "an issuer identifier has no query or fragment"
    if problem is not None:
        raise ConfigError(f"{PREFIX}JWT_OIDC_ISSUER={_redact(value)!r}: {problem}")
    return value


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of IP addresses or CIDR networks, normalised (e.g. `10.0.0.0/8, 127.0.0.1`)."""
    raw = env.get(PREFIX + name) or ""
    try:
        return tuple(str(ipaddress.ip_network(part.strip(), strict=False)) for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}{name}={raw!r}: expected IP addresses or CIDR networks ({exc})") from None


#: A service token is a secret a person never types: long enough to be unguessable, and printable.
MIN_TOKEN_LENGTH = 32


def _tokens(env: Mapping[str, str], current: str, previous: str) -> tuple[str, ...]:
    """The current token and, during a rotation, the previous one; the values never appear in a message."""
    found: list[str] = []
    for name in (current, previous):
        value = (env.get(PREFIX + name) or "").strip()
        if not value:
            continue
        if len(value) < MIN_TOKEN_LENGTH or not value.isascii() or not value.isprintable() or " " in value:
            raise ConfigError(
                f"{PREFIX}{name}: must be at least {MIN_TOKEN_LENGTH} printable ASCII characters without spaces "
                "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        found.append(value)
    if len(found) == 1 and not (env.get(PREFIX + current) or "").strip():
        raise ConfigError(f"{PREFIX}{previous} is set but {PREFIX}{current} is not: a rotation keeps both")
    return tuple(found)


#: The journal's directory when nothing names one: the old variable's default, so existing volumes keep working.
DEFAULT_JOURNAL_DIR = "/var/lib/somabrain/outbox"


def journal_dir_from_env(env: Mapping[str, str]) -> str:
    """`SOMABRAIN_JOURNAL_DIR`, the directory of the /remember journal (brain.memory.journal).

    Its old name `SOMABRAIN_OUTBOX_DIR` (which named the journal, not the Kafka outbox) still works for one release:
    read when the new one is unset, with a warning naming the new one. Both set to different directories is a
    ConfigError naming both: either could be the one the operator meant.
    """
    new, old = PREFIX + "JOURNAL_DIR", PREFIX + "OUTBOX_DIR"
    current, legacy = env.get(new) or None, env.get(old) or None
    if legacy is None:
        return current or DEFAULT_JOURNAL_DIR
    if current is not None and os.path.normpath(current) != os.path.normpath(legacy):
        raise ConfigError(f"{new}={current!r} and {old}={legacy!r} disagree: {old} is the old name of {new}; "
                          f"unset {old}")
    log.warning("%s is the old name of %s (the memory journal's directory, not the Kafka outbox) and goes away in "
                "the next release: set %s=%s and unset %s", old, new, new, current or legacy, old)
    return current or legacy


def _redact(url: str) -> str:
    """Hide a password in a URL so that error messages and logs never show it."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]
SECURITY_PROTOCOLS: tuple[SecurityProtocol, ...] = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: tuple[SaslMechanism, ...] = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")


@dataclass(frozen=True)
class KafkaSettings:
    """How the audit publisher reaches Kafka (`SOMABRAIN_KAFKA_*`), and what it may do to the audit topic there.

    The defaults are the dev ones (plaintext, the topic created with one replica); `SOMABRAIN_ENV=prod` changes the
    topic defaults only: no creation, and a replication factor of 3 with min.insync.replicas 2 to check against.
    """

    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    #: A file holding the password (a mounted Secret); read again at every new connection, so a rotation needs
    #: no restart.
    sasl_password_file: str | None = None
    #: CA bundle the broker's certificate must chain to; None: the system's trust store.
    ssl_cafile: str | None = None
    #: Client certificate (and key, unless the certificate file holds it too), for brokers that require mTLS.
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    create_topic: bool = True
    topic_partitions: int = 1
    topic_replication_factor: int = 1
    topic_min_insync_replicas: int = 1

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def password(self) -> str:
        """The SASL password: the file's content (trailing newline dropped) when a file is set, else the variable."""
        if self.sasl_password_file is None:
            return self.sasl_password or ""
        name = f"{PREFIX}KAFKA_SASL_PASSWORD_FILE={self.sasl_password_file!r}"
        try:
            with open(self.sasl_password_file, encoding="utf-8") as handle:
                value = handle.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{name}: cannot read the password ({exc.__class__.__name__}: {exc})") from None
        if not value:
            raise ConfigError(f"{name}: the file is empty")
        return value

    def ssl_context(self) -> ssl.SSLContext:
        """aiokafka's SSL context: the broker's certificate and host name are verified against `ssl_cafile` (or the
        system's CAs), and `ssl_certfile`/`ssl_keyfile` are presented when set. Files are read now, so a context
        built at every new connection picks up rotated ones."""
        from aiokafka.helpers import create_ssl_context

        try:
            context: ssl.SSLContext = create_ssl_context(cafile=self.ssl_cafile)
        except OSError as exc:  # ssl.SSLError included
            raise ConfigError(
                f"{PREFIX}KAFKA_SSL_CAFILE={self.ssl_cafile!r}: not a readable PEM CA bundle ({exc})"
            ) from None
        if self.ssl_certfile is not None:
            try:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
            except OSError as exc:
                raise ConfigError(
                    f"{PREFIX}KAFKA_SSL_CERTFILE={self.ssl_certfile!r} (key {PREFIX}KAFKA_SSL_KEYFILE="
                    f"{self.ssl_keyfile!r}): not a readable PEM certificate and matching key ({exc})"
                ) from None
        return context

    def check_files(self) -> None:
        """Read the password file and the TLS files once at start-up, so that a wrong path fails there."""
        if self.sasl:
            self.password()
        if self.tls:
            self.ssl_context()


@dataclass(frozen=True)
class Settings:
    """Everything the two apps read from the environment. Construct with `Settings.from_env()`."""

    env: Environment = "dev"
    redis_url: str | None = None
    kafka_url: str | None = None
    opa_url: str | None = None
    postgres_dsn: str | None = None
    memory_http_endpoint: str | None = None
    #: The service token SomaMemory's data routes require (`MEMORY_TOKEN`, and during a rotation also
    #: `MEMORY_TOKEN_PREVIOUS`); the API sends the first. Empty: SomaMemory accepts any caller (dev only).
    memory_tokens: tuple[str, ...] = ()

    strict_real: bool = False
    force_full_stack: bool = False
    require_memory: bool = False
    predictor_provider: PredictorProvider = "mahal"

    disable_auth: bool = True
    jwt_public_key_path: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_tenant_claim: str = "tenant"
    jwt_algorithm: str = "RS256"
    #: The keys of an OpenID Connect issuer instead of PEM files (exactly one of the two with auth on): its URL,
    #: whose `/.well-known/openid-configuration` names the JWKS (brain.oidc). Tokens' `iss` must be this URL.
    jwt_oidc_issuer: str | None = None
    #: PEM CA bundle the issuer's TLS certificate must chain to; None: the system's trust store.
    jwt_oidc_ca_file: str | None = None
    #: At most one JWKS fetch per this many seconds, whatever asks (an unknown `kid`, the max age, a retry).
    jwt_jwks_min_refresh_s: float = 30.0
    #: Refetch the JWKS (and the discovery document) once the cached keys are this old; kept if the fetch fails.
    jwt_jwks_max_age_s: float = 3600.0

    # Audit pipeline, journal, policy and rate limits.
    #: The /remember journal's directory (SOMABRAIN_JOURNAL_DIR, see journal_dir_from_env()).
    journal_dir: str = DEFAULT_JOURNAL_DIR
    memory_queue: bool = False
    kafka_required: bool = False
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    audit_topic: str = "soma.audit"
    policy_timeout_s: float = 0.5
    policy_cache_ttl_s: float = 2.0
    rate_limit_rps: float = 200.0
    rate_limit_burst: int = 400
    rate_limit_fail_open: bool = False
    #: Per client address, for callers without a verified identity (see brain.api.gate).
    rate_limit_address_rps: float = 1000.0
    rate_limit_address_burst: int = 2000
    #: Peers whose X-Forwarded-For is believed (the ingress); empty: the address is the TCP peer's, always.
    trusted_proxies: tuple[str, ...] = ()
    refusal_audit_window_s: float = 60.0

    # Working memory, predictor and health tuning.
    wm_capacity: int = 256
    wm_ttl_seconds: int = 3600
    #: Bytes of one tenant's working memory (its items' stored JSON); beyond them its oldest items go (brain.wm).
    wm_max_bytes: int = 8 * 1024 * 1024
    embed_dim: int = 256
    predictor_alpha: float = 0.05
    batch_max: int = 64
    batch_window_ms: float = 2.0
    health_interval_s: float = 1.0
    dependency_timeout_s: float = 1.0
    #: Default: the next MiB above the largest valid item as JSON (brain.web.schemas.MAX_ITEM_BODY_BYTES): 2 MiB.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    recall_top_k_max: int = 100
    #: What one tenant may hold in SomaMemory: memories, and bytes (content, metadata, embedding); beyond, 403.
    memory_quota_items: int = 1_000_000
    memory_quota_bytes: int = 4 * 1024**3
    #: Serve `/metrics` on this port only (the one port the monitoring namespace may reach), and nowhere else;
    #: unset: on the app's own port, beside the routes.
    metrics_port: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, app: AppName = "api") -> Settings:
        """Read and check the settings for `app` ("api" or "memory"); raises ConfigError."""
        env = os.environ if environ is None else environ
        environment: Environment = "prod" if _choice(env, "ENV", "dev", ("dev", "prod")) == "prod" else "dev"
        settings = cls(
            env=environment,
            redis_url=_url(env, "REDIS_URL", ("redis", "rediss", "unix")),
            kafka_url=_kafka_url(env),
            opa_url=_url(env, "OPA_URL", ("http", "https")),
            postgres_dsn=_url(env, "POSTGRES_DSN", ("postgresql", "postgres")),
            memory_http_endpoint=_url(env, "MEMORY_HTTP_ENDPOINT", ("http", "https")),
            memory_tokens=_tokens(env, "MEMORY_TOKEN", "MEMORY_TOKEN_PREVIOUS"),
            strict_real=_flag(env, "STRICT_REAL", False),
            force_full_stack=_flag(env, "FORCE_FULL_STACK", False),
            require_memory=_flag(env, "REQUIRE_MEMORY", False),
            predictor_provider="stub"
            if _choice(env, "PREDICTOR_PROVIDER", "mahal", ("mahal", "stub")) == "stub"
            else "mahal",
            disable_auth=_flag(env, "DISABLE_AUTH", environment == "dev"),
            jwt_public_key_path=env.get(PREFIX + "JWT_PUBLIC_KEY_PATH") or None,
            jwt_issuer=env.get(PREFIX + "JWT_ISSUER") or None,
            jwt_audience=env.get(PREFIX + "JWT_AUDIENCE") or None,
            jwt_tenant_claim=env.get(PREFIX + "JWT_TENANT_CLAIM") or "tenant",
            jwt_algorithm=_choice(env, "JWT_ALGORITHM", "rs256", ("rs256", "es256")).upper(),
            jwt_oidc_issuer=_oidc_issuer(env),
            jwt_oidc_ca_file=(env.get(PREFIX + "JWT_OIDC_CA_FILE") or "").strip() or None,
            jwt_jwks_min_refresh_s=_float(env, "JWT_JWKS_MIN_REFRESH", 30.0, 1.0, 3600.0),
            jwt_jwks_max_age_s=_float(env, "JWT_JWKS_MAX_AGE", 3600.0, 60.0, 7 * 86400.0),
            journal_dir=journal_dir_from_env(env),
            # Queue /remember in the local journal while SomaMemory is down: only when memory is not required.
            memory_queue=_flag(env, "MEMORY_QUEUE", not _flag(env, "REQUIRE_MEMORY", False)),
            kafka_required=_flag(env, "KAFKA_REQUIRED", False),
            kafka=_kafka_settings(env, environment),
            audit_topic=env.get(PREFIX + "AUDIT_TOPIC") or "soma.audit",
            policy_timeout_s=_float(env, "POLICY_TIMEOUT", 0.5, 0.01, 30.0),
            policy_cache_ttl_s=_float(env, "POLICY_CACHE_TTL", 2.0, 0.0, 300.0),
            rate_limit_rps=_float(env, "RATE_LIMIT_RPS", 200.0, 0.0, 1e6),
            rate_limit_burst=_int(env, "RATE_LIMIT_BURST", 400, 1, 10_000_000),
            rate_limit_fail_open=_flag(env, "RATE_LIMIT_FAIL_OPEN", False),
            rate_limit_address_rps=_float(env, "RATE_LIMIT_ADDRESS_RPS", 1000.0, 0.0, 1e6),
            rate_limit_address_burst=_int(env, "RATE_LIMIT_ADDRESS_BURST", 2000, 1, 10_000_000),
            trusted_proxies=_networks(env, "TRUSTED_PROXIES"),
            refusal_audit_window_s=_float(env, "REFUSAL_AUDIT_WINDOW", 60.0, 1.0, 3600.0),
            wm_capacity=_int(env, "WM_CAPACITY", 256, 1, 100_000),
            wm_ttl_seconds=_int(env, "WM_TTL_SECONDS", 3600, 1, 30 * 86400),
            wm_max_bytes=_int(env, "WM_MAX_BYTES", 8 * 1024 * 1024, 2 * 1024 * 1024, 1024 * 1024 * 1024),
            embed_dim=_int(env, "EMBED_DIM", 256, 16, 4096),
            predictor_alpha=_float(env, "PREDICTOR_ALPHA", 0.05, 1e-4, 1.0),
            batch_max=_int(env, "BATCH_MAX", 64, 1, 4096),
            batch_window_ms=_float(env, "BATCH_WINDOW_MS", 2.0, 0.0, 1000.0),
            health_interval_s=_float(env, "HEALTH_INTERVAL", 1.0, 0.05, 60.0),
            dependency_timeout_s=_float(env, "DEPENDENCY_TIMEOUT", 1.0, 0.05, 30.0),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, 1024, 1024 * 1024 * 1024),
            memory_quota_items=_int(env, "MEMORY_QUOTA_ITEMS", 1_000_000, 1, 10**12),
            memory_quota_bytes=_int(env, "MEMORY_QUOTA_BYTES", 4 * 1024**3, 1024, 2**62),
            metrics_port=_int(env, "METRICS_PORT", 0, 1, 65535) or None,
        )
        if app == "memory":
            settings.check_memory_service()
        else:
            settings.check_api()
        return settings

    def check_api(self) -> None:
        """Enforce the strict-real switches for the API; raise ConfigError naming the first offending variable."""
        if self.strict_real and self.predictor_provider == "stub":
            raise ConfigError(
                f"{PREFIX}PREDICTOR_PROVIDER=stub is not allowed when {PREFIX}STRICT_REAL=1 "
                "(use mahal, or unset STRICT_REAL for a non-strict dev run)"
            )
        self._check_auth()
        if self.require_memory and self.memory_queue:
            raise ConfigError(
                f"{PREFIX}MEMORY_QUEUE=1 contradicts {PREFIX}REQUIRE_MEMORY=1 (a required SomaMemory is never "
                "bypassed); set one of them to 0"
            )
        # Working memory lives in Redis; without it the API cannot serve at all.
        needed = ["REDIS_URL"]
        if self.force_full_stack:
            needed += ["POSTGRES_DSN", "KAFKA_URL", "OPA_URL"]
        if self.require_memory:
            needed.append("MEMORY_HTTP_ENDPOINT")
        if self.env == "prod" and self.memory_http_endpoint is not None and not self.memory_tokens:
            raise ConfigError(
                f"{PREFIX}MEMORY_TOKEN is not set ({PREFIX}ENV=prod, and SomaMemory's data routes require the "
                "service token); set it from the somabrain-memory-token Secret"
            )
        for name in needed:
            if getattr(self, name.lower()) is None:
                why = {
                    "REDIS_URL": "working memory needs Redis",
                    "MEMORY_HTTP_ENDPOINT": f"{PREFIX}REQUIRE_MEMORY=1",
                }.get(name, f"{PREFIX}FORCE_FULL_STACK=1")
                raise ConfigError(f"{PREFIX}{name} is not set ({why}); set it to the service's URL")
        if self.kafka_url is not None:  # the publisher's files: a wrong path is a start-up error, not a health one
            self.kafka.check_files()

    def _check_auth(self) -> None:
        """Production always verifies JWTs, and auth on always asks the policy.

        Without a policy a valid token of any tenant, with any roles or none, could do everything; so auth on
        without `OPA_URL` is a start-up error rather than a quietly weaker gate.
        """
        if self.disable_auth and self.env == "prod":
            raise ConfigError(
                f"{PREFIX}DISABLE_AUTH=1 is refused when {PREFIX}ENV=prod (production always verifies JWTs); "
                "remove it, or set it to 0"
            )
        if self.disable_auth:
            return
        why = f"{PREFIX}ENV=prod" if self.env == "prod" else f"{PREFIX}DISABLE_AUTH=0"
        self._check_jwt_keys(why)
        if self.opa_url is None:
            raise ConfigError(
                f"{PREFIX}OPA_URL is not set (auth is on: {why}, and every tenant request needs a policy decision); "
                "set it to OPA's URL"
            )

    def _check_jwt_keys(self, why: str) -> None:
        """Auth on: the keys come from exactly one place, PEM files or an OIDC issuer, and tokens name one issuer.

        With an OIDC issuer, the discovery document's `issuer` must be its URL (OpenID Connect Discovery 1.0,
        section 4.3; brain.oidc checks it at every fetch) and so must the tokens' `iss`: `SOMABRAIN_JWT_ISSUER` may be
        left unset, and when set it must be that same URL.
        """
        pem, oidc = self.jwt_public_key_path, self.jwt_oidc_issuer
        if pem is not None and oidc is not None:
            raise ConfigError(
                f"{PREFIX}JWT_PUBLIC_KEY_PATH and {PREFIX}JWT_OIDC_ISSUER are both set; keep one (PEM keys on disk, "
                "or the keys an OpenID Connect issuer publishes)"
            )
        if pem is None and oidc is None:
            raise ConfigError(
                f"{PREFIX}JWT_PUBLIC_KEY_PATH is not set (auth is on: {why}); set it to the issuer's public key file "
                f"(or directory of *.pem keys), or set {PREFIX}JWT_OIDC_ISSUER to the URL of an OpenID Connect issuer"
            )
        if oidc is None:
            if self.jwt_issuer is None:
                raise ConfigError(f"{PREFIX}JWT_ISSUER is not set (auth is on: {why})")
        elif self.jwt_issuer is not None and self.jwt_issuer != oidc:
            raise ConfigError(
                f"{PREFIX}JWT_ISSUER={self.jwt_issuer!r} differs from {PREFIX}JWT_OIDC_ISSUER={oidc!r}: tokens "
                "verified with that issuer's keys must name it as their `iss`; unset JWT_ISSUER, or make the two equal"
            )
        if self.jwt_audience is None:
            raise ConfigError(f"{PREFIX}JWT_AUDIENCE is not set (auth is on: {why})")
        if oidc is not None:
            if self.jwt_oidc_ca_file is not None and not oidc.startswith("https://"):
                raise ConfigError(
                    f"{PREFIX}JWT_OIDC_CA_FILE is set but {PREFIX}JWT_OIDC_ISSUER={oidc!r} uses no TLS; use an "
                    "https:// issuer, or unset the CA file"
                )
            if self.jwt_jwks_max_age_s < self.jwt_jwks_min_refresh_s:
                raise ConfigError(
                    f"{PREFIX}JWT_JWKS_MAX_AGE={self.jwt_jwks_max_age_s:g} is below {PREFIX}JWT_JWKS_MIN_REFRESH="
                    f"{self.jwt_jwks_min_refresh_s:g}: keys cannot be refetched more often than the minimum interval"
                )

    @property
    def jwt_expected_issuer(self) -> str | None:
        """The `iss` tokens must carry: `SOMABRAIN_JWT_ISSUER`, else the OIDC issuer's URL."""
        return self.jwt_issuer or self.jwt_oidc_issuer

    def check_memory_service(self) -> None:
        """SomaMemory's own requirement: a Postgres DSN to persist into."""
        if self.postgres_dsn is None:
            raise ConfigError(f"{PREFIX}POSTGRES_DSN is not set (SomaMemory persists memories in Postgres)")
        if self.env == "prod" and not self.memory_tokens:
            raise ConfigError(
                f"{PREFIX}MEMORY_TOKEN is not set ({PREFIX}ENV=prod: SomaMemory serves data only to callers "
                "holding the service token); set it from the somabrain-memory-token Secret"
            )

    @property
    def journal_enabled(self) -> bool:
        """Queue /remember in the journal while SomaMemory is down: only for a configured, optional SomaMemory."""
        return self.memory_queue and self.memory_http_endpoint is not None

    @property
    def postgres_required(self) -> bool:
        return self.force_full_stack or self.postgres_dsn is not None

    @property
    def memory_required(self) -> bool:
        return self.require_memory or self.memory_http_endpoint is not None

    def redacted(self, url: str | None) -> str | None:
        return None if url is None else _redact(url)


def _kafka_url(env: Mapping[str, str]) -> str | None:
    """Kafka accepts `kafka://host:port[,host:port]` or a bare `host:port[,host:port]` bootstrap list."""
    raw = env.get(PREFIX + "KAFKA_URL")
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip()
    servers = value.removeprefix("kafka://")
    for server in servers.split(","):
        host, sep, port = server.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"{PREFIX}KAFKA_URL={raw!r}: expected kafka://host:port (or host:port[,host:port...])"
            )
    return value


def kafka_bootstrap(kafka_url: str) -> str:
    """The aiokafka bootstrap_servers string for a validated KAFKA_URL."""
    return kafka_url.removeprefix("kafka://")


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = (env.get(PREFIX + name) or "").strip()
    return value or None


def _upper_choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    raw = env.get(PREFIX + name)
    value = (raw or "").strip().upper()
    if not value:
        return None
    if value not in allowed:
        raise ConfigError(f"{PREFIX}{name}={raw!r}: expected one of {', '.join(allowed)}")
    return value


def _kafka_settings(env: Mapping[str, str], environment: Environment) -> KafkaSettings:
    """`SOMABRAIN_KAFKA_*` beside the URL: security protocol, SASL, TLS files and the audit topic's shape.

    A setting that the chosen protocol would ignore (a CA file with PLAINTEXT, a user without SASL) is an error:
    left as it is, it would look like protection that is not there.
    """
    protocol = _upper_choice(env, "KAFKA_SECURITY_PROTOCOL", SECURITY_PROTOCOLS) or "PLAINTEXT"
    mechanism = _upper_choice(env, "KAFKA_SASL_MECHANISM", SASL_MECHANISMS)
    username = _text(env, "KAFKA_SASL_USERNAME")
    password = env.get(PREFIX + "KAFKA_SASL_PASSWORD") or None
    password_file = _text(env, "KAFKA_SASL_PASSWORD_FILE")
    cafile, certfile, keyfile = (_text(env, f"KAFKA_SSL_{n}") for n in ("CAFILE", "CERTFILE", "KEYFILE"))
    sasl = protocol in ("SASL_PLAINTEXT", "SASL_SSL")
    tls = protocol in ("SSL", "SASL_SSL")
    why = f"{PREFIX}KAFKA_SECURITY_PROTOCOL={protocol}"

    sasl_set = [n for n, v in (("MECHANISM", mechanism), ("USERNAME", username), ("PASSWORD", password),
                               ("PASSWORD_FILE", password_file)) if v is not None]
    if sasl_set and not sasl:
        name = f"{PREFIX}KAFKA_SASL_{sasl_set[0]}"
        raise ConfigError(f"{name} is set but {why} uses no SASL; set the protocol to SASL_SSL, or unset {name}")
    if sasl:
        mechanism = mechanism or "SCRAM-SHA-512"
        if username is None:
            raise ConfigError(f"{PREFIX}KAFKA_SASL_USERNAME is not set ({why} authenticates with SASL {mechanism})")
        if password is not None and password_file is not None:
            raise ConfigError(
                f"{PREFIX}KAFKA_SASL_PASSWORD and {PREFIX}KAFKA_SASL_PASSWORD_FILE are both set; keep one "
                "(the file, for a mounted Secret)"
            )
        if password is None and password_file is None:
            raise ConfigError(
                f"{PREFIX}KAFKA_SASL_PASSWORD_FILE is not set ({why} needs the password of {username!r}); point it "
                f"at the mounted Secret's file, or set {PREFIX}KAFKA_SASL_PASSWORD"
            )
        if mechanism == "PLAIN" and not tls and environment == "prod":
            raise ConfigError(
                f"{PREFIX}KAFKA_SASL_MECHANISM=PLAIN with {why} sends the password in clear; refused when "
                f"{PREFIX}ENV=prod (use SASL_SSL, or a SCRAM mechanism)"
            )

    ssl_set = [n for n, v in (("CAFILE", cafile), ("CERTFILE", certfile), ("KEYFILE", keyfile)) if v is not None]
    if ssl_set and not tls:
        name = f"{PREFIX}KAFKA_SSL_{ssl_set[0]}"
        raise ConfigError(f"{name} is set but {why} uses no TLS; set the protocol to SSL or SASL_SSL, or unset {name}")
    if keyfile is not None and certfile is None:
        raise ConfigError(
            f"{PREFIX}KAFKA_SSL_KEYFILE is set without {PREFIX}KAFKA_SSL_CERTFILE (the client certificate it "
            "belongs to)"
        )

    prod = environment == "prod"
    replication = _int(env, "KAFKA_TOPIC_REPLICATION_FACTOR", 3 if prod else 1, 1, 32767)
    # Kafka's usual pairing: one replica may be down and acks=all writes still go through (3 -> 2, 2 -> 1).
    min_insync = _int(env, "KAFKA_TOPIC_MIN_INSYNC_REPLICAS", min(2, max(1, replication - 1)), 1, 32767)
    if min_insync > replication:
        raise ConfigError(
            f"{PREFIX}KAFKA_TOPIC_MIN_INSYNC_REPLICAS={min_insync} exceeds {PREFIX}KAFKA_TOPIC_REPLICATION_FACTOR="
            f"{replication}: no acks=all write could ever be acknowledged"
        )
    return KafkaSettings(
        security_protocol=cast(SecurityProtocol, protocol),  # checked against SECURITY_PROTOCOLS above
        sasl_mechanism=cast(SaslMechanism, mechanism) if sasl else None,
        sasl_username=username,
        sasl_password=password,
        sasl_password_file=password_file,
        ssl_cafile=cafile,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        create_topic=_flag(env, "KAFKA_CREATE_TOPIC", not prod),
        topic_partitions=_int(env, "KAFKA_TOPIC_PARTITIONS", 1, 1, 10_000),
        topic_replication_factor=replication,
        topic_min_insync_replicas=min_insync,
    )
