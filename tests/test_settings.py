"""Settings: strict-real rules and malformed values are one-line ConfigErrors naming the variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from brain.errors import ConfigError
from brain.settings import Settings, kafka_bootstrap

FULL = {
    "SOMABRAIN_STRICT_REAL": "1",
    "SOMABRAIN_FORCE_FULL_STACK": "1",
    "SOMABRAIN_REQUIRE_MEMORY": "1",
    "SOMABRAIN_REDIS_URL": "redis://sb_redis:6379/0",
    "SOMABRAIN_KAFKA_URL": "kafka://kafka:9092",
    "SOMABRAIN_OPA_URL": "http://sb_opa:8181",
    "SOMABRAIN_POSTGRES_DSN": "postgresql://soma:secret@sb_postgres:5432/somabrain",
    "SOMABRAIN_MEMORY_HTTP_ENDPOINT": "http://somamemory:9595",
}


def test_full_strict_stack_parses() -> None:
    s = Settings.from_env(FULL)
    assert s.strict_real and s.force_full_stack and s.require_memory
    assert s.predictor_provider == "mahal"
    assert kafka_bootstrap(s.kafka_url or "") == "kafka:9092"
    assert s.postgres_required and s.memory_required


def test_stub_predictor_refused_under_strict_real() -> None:
    with pytest.raises(ConfigError, match="SOMABRAIN_PREDICTOR_PROVIDER=stub is not allowed"):
        Settings.from_env({**FULL, "SOMABRAIN_PREDICTOR_PROVIDER": "stub"})


def test_stub_predictor_allowed_when_not_strict() -> None:
    s = Settings.from_env({"SOMABRAIN_REDIS_URL": "redis://localhost", "SOMABRAIN_PREDICTOR_PROVIDER": "stub"})
    assert s.predictor_provider == "stub"


@pytest.mark.parametrize("missing", ["POSTGRES_DSN", "KAFKA_URL", "OPA_URL", "MEMORY_HTTP_ENDPOINT", "REDIS_URL"])
def test_missing_dependency_url_names_the_variable(missing: str) -> None:
    env = {k: v for k, v in FULL.items() if k != f"SOMABRAIN_{missing}"}
    with pytest.raises(ConfigError, match=f"SOMABRAIN_{missing} is not set"):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("REDIS_URL", "http://sb_redis:6379", "scheme must be one of redis://"),
        ("REDIS_URL", "redis://:6379", "no host"),
        ("POSTGRES_DSN", "mysql://u:p@h/db", "scheme must be one of postgresql://"),
        ("POSTGRES_DSN", "postgresql://u:p@h:notaport/db", "malformed URL"),
        ("OPA_URL", "sb_opa:8181", "scheme must be one of http://"),
        ("KAFKA_URL", "kafka://kafka", "expected kafka://host:port"),
        ("KAFKA_URL", "kafka:99999", "expected kafka://host:port"),
        ("MEMORY_HTTP_ENDPOINT", "http://", "no host"),
        ("STRICT_REAL", "maybe", "expected 1 or 0"),
        ("PREDICTOR_PROVIDER", "oracle", "expected one of mahal, stub"),
        ("WM_CAPACITY", "0", "must be between 1 and"),
        ("WM_CAPACITY", "ten", "expected a whole number"),
    ],
)
def test_malformed_values_are_reported_by_name(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**FULL, f"SOMABRAIN_{name}": value})
    text = str(info.value)
    assert text.startswith(f"SOMABRAIN_{name}")
    assert message in text
    assert "\n" not in text


def test_password_never_appears_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**FULL, "SOMABRAIN_POSTGRES_DSN": "mysql://soma:hunter2@db/x"})
    assert "hunter2" not in str(info.value)
    assert "***" in str(info.value)


def test_memory_service_needs_only_postgres() -> None:
    s = Settings.from_env({"SOMABRAIN_POSTGRES_DSN": "postgresql://p@127.0.0.1/x"}, app="memory")
    assert s.postgres_dsn is not None
    with pytest.raises(ConfigError, match="SOMABRAIN_POSTGRES_DSN is not set"):
        Settings.from_env({}, app="memory")


def test_journal_only_for_a_configured_optional_somamemory() -> None:
    base = {"SOMABRAIN_REDIS_URL": "redis://localhost"}
    assert not Settings.from_env(base).journal_enabled  # no SomaMemory configured: nothing to queue for
    optional = {**base, "SOMABRAIN_MEMORY_HTTP_ENDPOINT": "http://m:9595"}
    assert Settings.from_env(optional).journal_enabled
    assert not Settings.from_env({**optional, "SOMABRAIN_REQUIRE_MEMORY": "1"}).journal_enabled
    with pytest.raises(ConfigError, match="contradicts"):
        Settings.from_env({**optional, "SOMABRAIN_REQUIRE_MEMORY": "1", "SOMABRAIN_MEMORY_QUEUE": "1"})


AUTH = {
    "SOMABRAIN_REDIS_URL": "redis://localhost",
    "SOMABRAIN_JWT_PUBLIC_KEY_PATH": "/secrets",
    "SOMABRAIN_JWT_ISSUER": "issuer",
    "SOMABRAIN_JWT_AUDIENCE": "somabrain-api",
    "SOMABRAIN_OPA_URL": "http://sb_opa:8181",
}


def test_dev_keeps_auth_off_by_default() -> None:
    assert Settings.from_env({"SOMABRAIN_REDIS_URL": "redis://localhost"}).disable_auth


def test_prod_alone_turns_auth_on() -> None:
    with pytest.raises(ConfigError, match="SOMABRAIN_JWT_PUBLIC_KEY_PATH is not set"):
        Settings.from_env({"SOMABRAIN_REDIS_URL": "redis://localhost", "SOMABRAIN_ENV": "prod"})
    assert not Settings.from_env({**AUTH, "SOMABRAIN_ENV": "prod"}).disable_auth


@pytest.mark.parametrize("strict", ["0", "1"])
@pytest.mark.parametrize("value", ["1", "true", "on"])
def test_prod_refuses_disabled_auth_whatever_else_is_set(strict: str, value: str) -> None:
    env = {**AUTH, "SOMABRAIN_ENV": "prod", "SOMABRAIN_STRICT_REAL": strict, "SOMABRAIN_DISABLE_AUTH": value}
    with pytest.raises(ConfigError, match=r"^SOMABRAIN_DISABLE_AUTH=1 is refused when SOMABRAIN_ENV=prod"):
        Settings.from_env(env)


@pytest.mark.parametrize("environment", ["dev", "prod"])
def test_auth_on_needs_a_policy(environment: str) -> None:
    env = {k: v for k, v in AUTH.items() if k != "SOMABRAIN_OPA_URL"}
    with pytest.raises(ConfigError, match=r"^SOMABRAIN_OPA_URL is not set \(auth is on"):
        Settings.from_env({**env, "SOMABRAIN_ENV": environment, "SOMABRAIN_DISABLE_AUTH": "0"})


REPO = Path(__file__).resolve().parents[1]
DEPLOY_SECRETS = {"SOMABRAIN_POSTGRES_DSN": "postgresql://u:p@postgres:5432/somabrain"}  # a secretKeyRef in k8s


def _k8s_env() -> dict[str, str]:
    """What the somabrain pod gets from ConfigMap somabrain-env (envFrom), plus the DSN its Secret supplies."""
    documents = yaml.safe_load_all((REPO / "k8s" / "base" / "configmaps.yaml").read_text(encoding="utf-8"))
    data = next(d["data"] for d in documents if d["metadata"]["name"] == "somabrain-env")
    return {**{k: str(v) for k, v in data.items()}, **DEPLOY_SECRETS}


def test_k8s_env_starts_with_auth_and_policy() -> None:
    s = Settings.from_env(_k8s_env())
    assert s.env == "prod" and not s.disable_auth and s.opa_url


@pytest.mark.parametrize(
    "overrides",
    [
        {"SOMABRAIN_DISABLE_AUTH": "1"},
        {"SOMABRAIN_DISABLE_AUTH": "1", "SOMABRAIN_STRICT_REAL": "0"},
        {"SOMABRAIN_OPA_URL": "", "SOMABRAIN_FORCE_FULL_STACK": "0"},
    ],
    ids=["auth-off", "auth-off-not-strict", "no-policy"],
)
def test_overrides_configmap_cannot_switch_off_auth_or_policy_in_prod(overrides: dict[str, str]) -> None:
    """somabrain-overrides is loaded after somabrain-env, so its keys win: each attempt is a start-up error."""
    with pytest.raises(ConfigError, match=r"^SOMABRAIN_(DISABLE_AUTH|OPA_URL)"):
        Settings.from_env({**_k8s_env(), **overrides})


def test_compose_dev_env_still_starts_with_auth_off() -> None:
    compose = yaml.safe_load((REPO / "compose" / "docker-compose.yml").read_text(encoding="utf-8"))
    environment = compose["services"]["somabrain"]["environment"]
    env = {k: re.sub(r"\$\{\w+[^}]*\}", "x", str(v)) for k, v in environment.items()}  # ${POSTGRES_USER:?...}
    s = Settings.from_env(env)
    assert s.env == "dev" and s.disable_auth and s.opa_url
