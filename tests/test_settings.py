"""Settings: strict-real rules and malformed values are one-line ConfigErrors naming the variable."""

from __future__ import annotations

import logging
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


def test_journal_dir_defaults_to_the_old_directory() -> None:
    """Renamed from SOMABRAIN_OUTBOX_DIR, same default: the volumes mounted there keep their journal."""
    base = {"SOMABRAIN_REDIS_URL": "redis://localhost"}
    assert Settings.from_env(base).journal_dir == "/var/lib/somabrain/outbox"
    assert Settings.from_env({**base, "SOMABRAIN_JOURNAL_DIR": "/data/j"}).journal_dir == "/data/j"


def test_the_old_journal_variable_still_works_for_a_release_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    base = {"SOMABRAIN_REDIS_URL": "redis://localhost"}
    with caplog.at_level(logging.WARNING, logger="brain.settings"):
        assert Settings.from_env({**base, "SOMABRAIN_OUTBOX_DIR": "/data/old"}).journal_dir == "/data/old"
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "SOMABRAIN_OUTBOX_DIR is the old name of SOMABRAIN_JOURNAL_DIR" in record.getMessage()
    assert "set SOMABRAIN_JOURNAL_DIR=/data/old" in record.getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="brain.settings"):
        both = {**base, "SOMABRAIN_JOURNAL_DIR": "/data/j", "SOMABRAIN_OUTBOX_DIR": "/data/j/"}  # the same directory
        assert Settings.from_env(both).journal_dir == "/data/j"
        assert Settings.from_env({**base, "SOMABRAIN_JOURNAL_DIR": "/data/j"}).journal_dir == "/data/j"
    assert len(caplog.records) == 1 and "unset SOMABRAIN_OUTBOX_DIR" in caplog.records[0].getMessage()


def test_two_journal_directories_are_a_config_error_naming_both() -> None:
    env = {"SOMABRAIN_REDIS_URL": "redis://localhost", "SOMABRAIN_JOURNAL_DIR": "/data/new",
           "SOMABRAIN_OUTBOX_DIR": "/data/old"}
    with pytest.raises(ConfigError, match=r"^SOMABRAIN_JOURNAL_DIR='/data/new' and SOMABRAIN_OUTBOX_DIR='/data/old' "
                                          r"disagree: .*unset SOMABRAIN_OUTBOX_DIR$"):
        Settings.from_env(env)


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
# Secret-backed in k8s (secretKeyRef).
DEPLOY_SECRETS = {"SOMABRAIN_POSTGRES_DSN": "postgresql://u:p@postgres:5432/somabrain",
                  "SOMABRAIN_MEMORY_TOKEN": "a-service-token-from-the-secret-0123456789"}


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
    # ${POSTGRES_USER:?...} and the others, as .env.local would fill them (a token is 32 characters or more).
    env = {k: re.sub(r"\$\{\w+[^}]*\}", "x" * 40, str(v)) for k, v in environment.items()}
    s = Settings.from_env(env)
    assert s.env == "dev" and s.disable_auth and s.opa_url


# --- Kafka: security protocol, SASL, TLS files, the audit topic ------------------------------------------------

KAFKA = {"SOMABRAIN_REDIS_URL": "redis://localhost", "SOMABRAIN_KAFKA_URL": "kafka://kafka:9092"}
SASL = {**KAFKA, "SOMABRAIN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SOMABRAIN_KAFKA_SASL_USERNAME": "somabrain",
        "SOMABRAIN_KAFKA_SASL_PASSWORD": "hunter2"}


def test_kafka_defaults_in_dev_create_the_topic_with_one_replica() -> None:
    kafka = Settings.from_env(KAFKA).kafka
    assert kafka.security_protocol == "PLAINTEXT" and not kafka.tls and not kafka.sasl
    assert kafka.create_topic
    assert (kafka.topic_partitions, kafka.topic_replication_factor, kafka.topic_min_insync_replicas) == (1, 1, 1)


def test_kafka_defaults_in_prod_leave_the_topic_to_the_operator() -> None:
    kafka = Settings.from_env(_k8s_env()).kafka
    assert not kafka.create_topic
    assert (kafka.topic_replication_factor, kafka.topic_min_insync_replicas) == (3, 2)
    assert Settings.from_env({**_k8s_env(), "SOMABRAIN_KAFKA_CREATE_TOPIC": "1"}).kafka.create_topic


@pytest.mark.parametrize(("replication", "min_insync"), [("1", 1), ("2", 1), ("3", 2), ("5", 2)])
def test_min_insync_replicas_defaults_to_one_replica_of_slack(replication: str, min_insync: int) -> None:
    kafka = Settings.from_env({**KAFKA, "SOMABRAIN_KAFKA_TOPIC_REPLICATION_FACTOR": replication}).kafka
    assert kafka.topic_min_insync_replicas == min_insync


def test_sasl_settings_parse_case_insensitively_with_scram_512_by_default() -> None:
    kafka = Settings.from_env({**SASL, "SOMABRAIN_KAFKA_SECURITY_PROTOCOL": "sasl_ssl"}).kafka
    assert kafka.security_protocol == "SASL_SSL" and kafka.tls and kafka.sasl
    assert kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert kafka.password() == "hunter2"
    mechanism = Settings.from_env({**SASL, "SOMABRAIN_KAFKA_SASL_MECHANISM": "scram-sha-256"}).kafka.sasl_mechanism
    assert mechanism == "SCRAM-SHA-256"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"SOMABRAIN_KAFKA_SECURITY_PROTOCOL": "TLS"},
         "SOMABRAIN_KAFKA_SECURITY_PROTOCOL='TLS': expected one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
        ({**SASL, "SOMABRAIN_KAFKA_SASL_MECHANISM": "GSSAPI"},
         "SOMABRAIN_KAFKA_SASL_MECHANISM='GSSAPI': expected one of SCRAM-SHA-256, SCRAM-SHA-512, PLAIN"),
        ({**SASL, "SOMABRAIN_KAFKA_SASL_USERNAME": ""},
         "SOMABRAIN_KAFKA_SASL_USERNAME is not set (SOMABRAIN_KAFKA_SECURITY_PROTOCOL=SASL_SSL authenticates"),
        ({**SASL, "SOMABRAIN_KAFKA_SASL_PASSWORD": ""}, "SOMABRAIN_KAFKA_SASL_PASSWORD_FILE is not set"),
        ({**SASL, "SOMABRAIN_KAFKA_SASL_PASSWORD_FILE": "/run/secrets/kafka"},
         "SOMABRAIN_KAFKA_SASL_PASSWORD and SOMABRAIN_KAFKA_SASL_PASSWORD_FILE are both set"),
        ({"SOMABRAIN_KAFKA_SASL_USERNAME": "somabrain"},
         "SOMABRAIN_KAFKA_SASL_USERNAME is set but SOMABRAIN_KAFKA_SECURITY_PROTOCOL=PLAINTEXT uses no SASL"),
        ({"SOMABRAIN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "SOMABRAIN_KAFKA_SSL_CAFILE": "/ca.pem",
          "SOMABRAIN_KAFKA_SASL_USERNAME": "u", "SOMABRAIN_KAFKA_SASL_PASSWORD": "p"},
         "SOMABRAIN_KAFKA_SSL_CAFILE is set but SOMABRAIN_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT uses no TLS"),
        ({"SOMABRAIN_KAFKA_SECURITY_PROTOCOL": "SSL", "SOMABRAIN_KAFKA_SSL_KEYFILE": "/client.key"},
         "SOMABRAIN_KAFKA_SSL_KEYFILE is set without SOMABRAIN_KAFKA_SSL_CERTFILE"),
        ({"SOMABRAIN_KAFKA_TOPIC_REPLICATION_FACTOR": "2", "SOMABRAIN_KAFKA_TOPIC_MIN_INSYNC_REPLICAS": "3"},
         "SOMABRAIN_KAFKA_TOPIC_MIN_INSYNC_REPLICAS=3 exceeds SOMABRAIN_KAFKA_TOPIC_REPLICATION_FACTOR=2"),
        ({"SOMABRAIN_KAFKA_TOPIC_REPLICATION_FACTOR": "0"},
         "SOMABRAIN_KAFKA_TOPIC_REPLICATION_FACTOR=0: must be between 1 and"),
        ({"SOMABRAIN_KAFKA_TOPIC_PARTITIONS": "many"}, "SOMABRAIN_KAFKA_TOPIC_PARTITIONS='many': expected a whole"),
        ({"SOMABRAIN_KAFKA_CREATE_TOPIC": "maybe"}, "SOMABRAIN_KAFKA_CREATE_TOPIC='maybe': expected 1 or 0"),
    ],
    ids=["protocol", "mechanism", "no-user", "no-password", "two-passwords", "sasl-without-sasl",
         "ca-without-tls", "key-without-cert", "isr-over-rf", "rf-zero", "partitions", "create-flag"],
)
def test_bad_kafka_combinations_name_the_variable(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**KAFKA, **overrides})
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text and "hunter2" not in text


def test_plain_over_plaintext_is_refused_in_prod_only() -> None:
    plain = {**SASL, "SOMABRAIN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "SOMABRAIN_KAFKA_SASL_MECHANISM": "PLAIN"}
    assert Settings.from_env(plain).kafka.sasl_mechanism == "PLAIN"  # dev: allowed (aiokafka warns)
    with pytest.raises(ConfigError, match=r"^SOMABRAIN_KAFKA_SASL_MECHANISM=PLAIN with .*SASL_PLAINTEXT sends the "
                                          r"password in clear; refused when SOMABRAIN_ENV=prod"):
        Settings.from_env({**_k8s_env(), **plain})
    over_tls = {**plain, "SOMABRAIN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}
    assert Settings.from_env({**_k8s_env(), **over_tls}).kafka.sasl_mechanism == "PLAIN"


def test_the_kafka_password_never_shows_in_repr() -> None:
    s = Settings.from_env(SASL)
    assert "hunter2" not in repr(s) and "hunter2" not in repr(s.kafka)


def test_password_file_is_read_at_start_and_again_at_each_call(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    env = {k: v for k, v in SASL.items() if k != "SOMABRAIN_KAFKA_SASL_PASSWORD"}
    kafka = Settings.from_env({**env, "SOMABRAIN_KAFKA_SASL_PASSWORD_FILE": str(secret)}).kafka
    assert kafka.password() == "s3cret"  # the trailing newline of `echo ... >` dropped
    secret.write_text("rotated")
    assert kafka.password() == "rotated"  # a rotated Secret: the next connection uses it

    with pytest.raises(ConfigError, match=r"^SOMABRAIN_KAFKA_SASL_PASSWORD_FILE='.*missing': cannot read the passw"):
        Settings.from_env({**env, "SOMABRAIN_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=r"^SOMABRAIN_KAFKA_SASL_PASSWORD_FILE='.*empty': the file is empty"):
        Settings.from_env({**env, "SOMABRAIN_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "empty")})


def test_tls_files_are_checked_at_start(tmp_path: Path) -> None:
    from tests.helpers.secure_kafka import make_tls_files

    files = make_tls_files(tmp_path / "tls")
    tls = {**KAFKA, "SOMABRAIN_KAFKA_SECURITY_PROTOCOL": "SSL"}
    ok = Settings.from_env({**tls, "SOMABRAIN_KAFKA_SSL_CAFILE": str(files.ca),
                            "SOMABRAIN_KAFKA_SSL_CERTFILE": str(files.client_cert),
                            "SOMABRAIN_KAFKA_SSL_KEYFILE": str(files.client_key)})
    context = ok.kafka.ssl_context()
    assert context.check_hostname and context.verify_mode.name == "CERT_REQUIRED"

    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    with pytest.raises(ConfigError, match=r"^SOMABRAIN_KAFKA_SSL_CAFILE='.*not\.pem': not a readable PEM CA bundle"):
        Settings.from_env({**tls, "SOMABRAIN_KAFKA_SSL_CAFILE": str(not_pem)})
    with pytest.raises(ConfigError, match=r"^SOMABRAIN_KAFKA_SSL_CERTFILE='.*client\.pem' \(key SOMABRAIN_KAFKA_SSL_"):
        Settings.from_env({**tls, "SOMABRAIN_KAFKA_SSL_CERTFILE": str(files.client_cert),
                           "SOMABRAIN_KAFKA_SSL_KEYFILE": str(files.server_key)})  # the key of another certificate


def test_kafka_files_are_the_api_s_concern_only(tmp_path: Path) -> None:
    """SomaMemory gets the same ConfigMap but does not publish: a Kafka Secret mounted on the API pod only is fine."""
    env = {**SASL, "SOMABRAIN_POSTGRES_DSN": "postgresql://p@127.0.0.1/x", "SOMABRAIN_KAFKA_SASL_PASSWORD": "",
           "SOMABRAIN_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "not-mounted-here")}
    assert Settings.from_env(env, app="memory").kafka.sasl
    with pytest.raises(ConfigError, match=r"^SOMABRAIN_KAFKA_SASL_PASSWORD_FILE"):
        Settings.from_env(env)
