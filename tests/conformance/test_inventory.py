"""The service inventory is one consistent table: unique names on each side, references that resolve, and the
deployment guide's service table inside it (DESIGN.md). Whether compose/ and k8s/ agree with it is the parity
gate's business (dimension `mapping`, tests/conformance/test_parity_mutations.py)."""

from __future__ import annotations

from conformance.inventory import (
    API,
    BY_KEY,
    ONE_SHOTS,
    SCRAPED,
    SEED,
    SERVICES,
    TLS_FRONT,
    by_compose,
    by_k8s_service,
    dependencies,
    flows,
)

KEYS = [s.key for s in SERVICES] + [o.key for o in ONE_SHOTS]
COMPOSE = [s.compose for s in SERVICES] + [o.compose for o in ONE_SHOTS]


def test_names_are_unique_on_each_side() -> None:
    assert len(set(KEYS)) == len(KEYS)
    assert len(set(COMPOSE)) == len(COMPOSE)
    workloads = [s.workload for s in SERVICES if s.workload]
    assert len(set(workloads)) == len(workloads)
    k8s_services = [name for s in SERVICES for name in s.k8s_services]
    assert len(set(k8s_services)) == len(k8s_services)


def test_references_resolve() -> None:
    for client in (*SERVICES, *ONE_SHOTS):
        assert set(client.uses) <= set(BY_KEY), client.key
        assert client.key not in client.uses, client.key
    for one in ONE_SHOTS:
        assert one.of and all(BY_KEY[key].in_cluster for key in one.of), one.key  # an initContainer of a workload


def test_every_in_cluster_service_has_a_kind_and_a_service_in_front() -> None:
    for service in SERVICES:
        if service.in_cluster is not None:
            assert service.in_cluster.kind in ("Deployment", "StatefulSet"), service.key
            assert service.k8s_service, service.key
            assert service.host("prod", "ns") == f"{service.k8s_service}.ns.svc.cluster.local"
        else:
            assert service.host("prod") is None and not service.in_env("prod")
        assert service.host("dev") == service.compose


def test_the_guides_service_table_is_in_it() -> None:
    """DESIGN.md's table: seven services, with the compose names and ports it fixes."""
    assert {(s.key, s.compose, s.port) for s in SEED} == {
        ("somabrain", "somabrain", 9696), ("somamemory", "somamemory", 9595), ("redis", "sb_redis", 6379),
        ("kafka", "kafka", 9092), ("opa", "sb_opa", 8181), ("prometheus", "prometheus", 9090),
        ("postgres", "sb_postgres", 5432),
    }
    assert {s.key for s in SEED if s.outside} == {"kafka", "prometheus"}  # external in prod, as the guide has it
    assert API.key == "somabrain" and API in SEED


def test_the_derived_views() -> None:
    assert TLS_FRONT.ingress and TLS_FRONT not in SEED and TLS_FRONT.outside
    assert [s.key for s in SCRAPED] == ["somabrain", "somamemory"]
    assert all(s.metrics_port not in (None, s.port) for s in SCRAPED)
    assert [s.key for s in dependencies("dev")] == ["somamemory", "redis", "kafka", "opa", "postgres"]
    assert "kafka" not in [s.key for s in dependencies("prod")]
    assert by_compose("sb_redis") is BY_KEY["redis"] and by_k8s_service("sb-redis") is BY_KEY["redis"]
    assert by_compose("nothing") is None and by_k8s_service("nothing") is None


def test_flows_stay_in_their_environment() -> None:
    prod = {(a.key, b.key) for a, b in flows("prod")}
    assert prod == {("somabrain", "somamemory"), ("somabrain", "redis"), ("somabrain", "opa"),
                    ("somabrain", "postgres"), ("somamemory", "postgres")}
    dev = {(a.key, b.key) for a, b in flows("dev")}
    assert prod < dev  # dev also has Kafka, Prometheus, the TLS front and the one-shots
    assert {("somabrain", "kafka"), ("prometheus", "somabrain"), ("ingress", "somabrain"),
            ("db-init", "postgres")} <= dev
