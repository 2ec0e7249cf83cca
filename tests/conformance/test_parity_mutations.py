"""Table-driven mutation suite: each case copies compose/ and k8s/, introduces ONE semantic drift and
checks that the gate exits 1, names the right dimension and subject, and says whether the finding is hard (no
exception can accept it; tests/conformance/test_parity_exceptions.py shows that even an exact one cannot).
Plus the clean tree (exit 0)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.gate import Mutation, compose_service, container, edit_k8s, run_gate

BASE = Path("k8s") / "base"


def k8s(file: str, kind: str, name: str, change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    return lambda tree: edit_k8s(tree / BASE / file, kind, name, change)


def dev(service: str, change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    return lambda tree: compose_service(tree, service, change)


def _set(mapping: dict[str, Any], key: str, value: Any) -> None:
    mapping[key] = value


def _remove_network(svc: dict[str, Any], network: str) -> None:
    svc["networks"] = [n for n in svc["networks"] if n != network]


def _drop_dns_policy(tree: Path) -> None:
    import yaml

    path = tree / BASE / "networkpolicies.yaml"
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d["metadata"]["name"] != "allow-dns-egress"]
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def _drop_ingress_from(namespace: str) -> Callable[[dict[str, Any]], None]:
    """Remove the ingress rule of a NetworkPolicy that admits the pods of `namespace`."""

    def change(policy: dict[str, Any]) -> None:
        def admits(rule: dict[str, Any]) -> bool:
            return any(
                (peer.get("namespaceSelector") or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                == namespace
                for peer in rule.get("from") or []
            )

        policy["spec"]["ingress"] = [r for r in policy["spec"]["ingress"] if not admits(r)]

    return change


def _drop_kafka_egress(policy: dict[str, Any]) -> None:
    policy["spec"]["egress"] = [r for r in policy["spec"]["egress"] if not any("ipBlock" in p for p in r["to"])]


def _healthcheck_path(svc: dict[str, Any], old: str, new: str) -> None:
    svc["healthcheck"]["test"] = [part.replace(old, new) for part in svc["healthcheck"]["test"]]


def _add_compose_service(tree: Path) -> None:
    def change(doc: dict[str, Any]) -> None:
        doc["services"]["sb_cache"] = {"image": "memcached:1.6-alpine", "networks": ["data"]}

    from tests.conformance.gate import edit_yaml

    edit_yaml(tree / "compose" / "docker-compose.yml", change)


def _literal_postgres_password(tree: Path) -> None:
    def change(obj: dict[str, Any]) -> None:
        c = container(obj)
        c.pop("envFrom")
        c["env"] = [
            {"name": "POSTGRES_USER", "value": "somabrain"},
            {"name": "POSTGRES_PASSWORD", "value": "hunter2"},
            {"name": "POSTGRES_DB", "value": "somabrain"},
        ]

    edit_k8s(tree / BASE / "postgres.yaml", "StatefulSet", "postgres", change)


def _ship_placeholder_secret(tree: Path) -> None:
    """What k8s/base/secrets.yaml used to be: a Secret with an empty password that every apply would write."""
    (tree / BASE / "secrets.yaml").write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: somabrain-postgres}\n"
        "stringData: {POSTGRES_USER: somabrain, POSTGRES_PASSWORD: '', POSTGRES_DB: somabrain}\n"
    )
    kustomization = tree / BASE / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("  - pvc.yaml\n", "  - pvc.yaml\n  - secrets.yaml\n"))


def _secret_key_ref(o: dict[str, Any], key: str) -> dict[str, Any]:
    ref: dict[str, Any] = next(e for e in container(o)["env"] if e["name"] == key)["valueFrom"]["secretKeyRef"]
    return ref


def _jwt_volume(o: dict[str, Any]) -> dict[str, Any]:
    vol: dict[str, Any] = next(v for v in o["spec"]["template"]["spec"]["volumes"] if v["name"] == "jwt")["secret"]
    return vol


def _nginx(old: str, new: str) -> Callable[[Path], None]:
    """Edit the dev TLS front's nginx configuration (compose/nginx/nginx.conf) in the copied tree."""

    def apply(tree: Path) -> None:
        path = tree / "compose" / "nginx" / "nginx.conf"
        text = path.read_text()
        assert old in text, f"{old!r} is not in nginx.conf any more: update this mutation"
        path.write_text(text.replace(old, new))

    return apply


def _ingress(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    return k8s("somabrain.yaml", "Ingress", "somabrain", change)


def _drop_init_container(name: str) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        pod = obj["spec"]["template"]["spec"]
        pod["initContainers"] = [c for c in pod.get("initContainers") or [] if c["name"] != name]

    return change


MUTATIONS = [
    Mutation(
        "k8s redis image minor bump",
        "image",
        "sb_redis",
        k8s("redis.yaml", "Deployment", "sb-redis", lambda o: _set(container(o), "image", "redis:7.4-alpine")),
    ),
    Mutation(
        "compose postgres major bump",
        "image",
        "sb_postgres",
        dev("sb_postgres", lambda s: _set(s, "image", "postgres:16-alpine")),
    ),
    Mutation(
        "k8s redis containerPort",
        "ports",
        "sb_redis/container-ports",
        k8s(
            "redis.yaml", "Deployment", "sb-redis", lambda o: _set(container(o)["ports"][0], "containerPort", 6380)
        ),
    ),
    Mutation(
        "Service targetPort names no container port",
        "ports",
        "service/sb-opa:8181",
        k8s("opa.yaml", "Service", "sb-opa", lambda o: _set(o["spec"]["ports"][0], "targetPort", "metrics")),
    ),
    Mutation(
        "Service selects no pod",
        "ports",
        "service/somamemory",
        k8s(
            "somamemory.yaml",
            "Service",
            "somamemory",
            lambda o: _set(o["spec"], "selector", {"app": "somamemory-v2"}),
        ),
    ),
    Mutation(
        "strict-real switched off in prod",
        "env",
        "somabrain/SOMABRAIN_STRICT_REAL",
        k8s(
            "configmaps.yaml", "ConfigMap", "somabrain-env", lambda o: _set(o["data"], "SOMABRAIN_STRICT_REAL", "0")
        ),
        hard=True,
    ),
    Mutation(
        "stub predictor in dev",
        "env",
        "somabrain/SOMABRAIN_PREDICTOR_PROVIDER",
        dev("somabrain", lambda s: _set(s["environment"], "SOMABRAIN_PREDICTOR_PROVIDER", "stub")),
        hard=True,
    ),
    Mutation(
        "dev Redis URL on another port",
        "env",
        "somabrain/SOMABRAIN_REDIS_URL",
        dev("somabrain", lambda s: _set(s["environment"], "SOMABRAIN_REDIS_URL", "redis://sb_redis:6380/0")),
    ),
    Mutation(
        "prod OPA URL points at Redis",
        "env",
        "somabrain/SOMABRAIN_OPA_URL",
        k8s(
            "configmaps.yaml",
            "ConfigMap",
            "somabrain-env",
            lambda o: _set(o["data"], "SOMABRAIN_OPA_URL", "http://sb-redis.somabrain-prod.svc:8181"),
        ),
    ),
    Mutation(
        "journal dir unset in dev",
        "env",
        "somabrain/SOMABRAIN_JOURNAL_DIR",
        dev("somabrain", lambda s: s["environment"].pop("SOMABRAIN_JOURNAL_DIR")),
    ),
    Mutation(
        "readiness probe on /healthz",
        "health",
        "somabrain/readiness",
        k8s(
            "somabrain.yaml",
            "Deployment",
            "somabrain",
            lambda o: _set(container(o)["readinessProbe"]["httpGet"], "path", "/healthz"),
        ),
        hard=True,
    ),
    Mutation(
        "readiness probe removed in k8s",
        "health",
        "sb_opa/readiness",
        k8s("opa.yaml", "Deployment", "sb-opa", lambda o: container(o).pop("readinessProbe")),
        hard=True,
    ),
    Mutation(
        "tcpSocket readiness probe where dev pings Redis",
        "health",
        "sb_redis/readiness",
        k8s("redis.yaml", "Deployment", "sb-redis", lambda o: _set(container(o), "readinessProbe",
                                                                  {"tcpSocket": {"port": 6379}})),
        hard=True,
    ),
    # The boundary of "weaker": a healthcheck lighter than the readiness probe is drift, but acceptable.
    Mutation(
        "dev healthcheck on /healthz, prod readiness on /readyz",
        "health",
        "somabrain/readiness",
        dev("somabrain", lambda s: _healthcheck_path(s, "/readyz", "/healthz")),
    ),
    Mutation(
        "OPA healthcheck removed in compose",
        "health",
        "sb_opa/readiness",
        dev("sb_opa", lambda s: s.pop("healthcheck")),
    ),
    Mutation(
        "liveness probe removed in k8s",
        "health",
        "somamemory/liveness",
        k8s("somamemory.yaml", "Deployment", "somamemory", lambda o: container(o).pop("livenessProbe")),
    ),
    Mutation(
        "dev Redis limit above the prod limit",
        "resources",
        "sb_redis/memory",
        dev("sb_redis", lambda s: _set(s, "mem_limit", "1g")),
        hard=True,
    ),
    Mutation(
        "dev SomaMemory CPU above the prod limit",
        "resources",
        "somamemory/cpu",
        dev("somamemory", lambda s: _set(s, "cpus", 2.0)),
        hard=True,
    ),
    Mutation(
        "k8s API memory limit cut below the dev limit",
        "resources",
        "somabrain/memory",
        k8s("somabrain.yaml", "Deployment", "somabrain",
            lambda o: _set(container(o)["resources"]["limits"], "memory", "256Mi")),
        hard=True,
    ),
    Mutation(
        "k8s API CPU limit cut below the dev limit",
        "resources",
        "somabrain/cpu",
        k8s("somabrain.yaml", "Deployment", "somabrain",
            lambda o: _set(container(o)["resources"]["limits"], "cpu", "500m")),
        hard=True,
    ),
    Mutation(
        "Postgres data not persistent in dev",
        "storage",
        "sb_postgres:/var/lib/postgresql/data",
        dev("sb_postgres", lambda s: s.pop("volumes")),
    ),
    Mutation(
        "outbox on emptyDir in prod",
        "storage",
        "somabrain:/var/lib/somabrain/outbox",
        k8s(
            "somabrain.yaml",
            "Deployment",
            "somabrain",
            lambda o: (
                _set(o["spec"]["template"]["spec"]["volumes"][0], "persistentVolumeClaim", None)
                or o["spec"]["template"]["spec"]["volumes"][0].update({"emptyDir": {}})
                or o["spec"]["template"]["spec"]["volumes"][0].pop("persistentVolumeClaim")
            ),
        ),
    ),
    Mutation(
        "dev starts before Redis is healthy",
        "dependencies",
        "somabrain->sb_redis",
        dev("somabrain", lambda s: _set(s["depends_on"]["sb_redis"], "condition", "service_started")),
    ),
    Mutation(
        "SomaMemory no longer waits for Postgres in dev",
        "dependencies",
        "somamemory->sb_postgres",
        dev("somamemory", lambda s: s.pop("depends_on")),
    ),
    Mutation("DNS egress policy deleted", "connectivity", "somabrain->dns:53/UDP", _drop_dns_policy, hard=True),
    Mutation(
        "ingress controller blocked from the API",
        "connectivity",
        "ingress-nginx->somabrain:9696",
        k8s("networkpolicies.yaml", "NetworkPolicy", "somabrain-ingress", _drop_ingress_from("ingress-nginx")),
        hard=True,
    ),
    Mutation(
        "the scrape of the API blocked in prod",
        "connectivity",
        "prometheus->somabrain:9697",
        k8s("networkpolicies.yaml", "NetworkPolicy", "somabrain-ingress", _drop_ingress_from("monitoring")),
        hard=True,
    ),
    Mutation(
        "Kafka egress removed",
        "connectivity",
        "somabrain->kafka:9092",
        k8s("networkpolicies.yaml", "NetworkPolicy", "somabrain-egress", _drop_kafka_egress),
        hard=True,
    ),
    # (somabrain off `memory` alone is no drift: it still shares `monitoring` with SomaMemory)
    Mutation(
        "SomaMemory off the memory network in dev",
        "connectivity",
        "somamemory->sb_postgres:5432",
        dev("somamemory", lambda s: _remove_network(s, "memory")),
    ),
    Mutation(
        "Redis ingress admits the wrong client",
        "connectivity",
        "somabrain->sb_redis:6379",
        k8s(
            "networkpolicies.yaml",
            "NetworkPolicy",
            "sb-redis-ingress",
            lambda o: _set(o["spec"]["ingress"][0]["from"][0]["podSelector"], "matchLabels", {"app": "somamemory"}),
        ),
        hard=True,
    ),
    Mutation(
        "literal Postgres password in compose",
        "security",
        "sb_postgres/POSTGRES_PASSWORD",
        dev("sb_postgres", lambda s: _set(s["environment"], "POSTGRES_PASSWORD", "hunter2")),
        hard=True,
    ),
    Mutation(
        "literal Postgres password in k8s",
        "security",
        "sb_postgres/POSTGRES_PASSWORD",
        _literal_postgres_password,
        hard=True,
    ),
    Mutation(
        "literal SomaMemory service token in compose",
        "security",
        "somamemory/SOMABRAIN_MEMORY_TOKEN",
        dev("somamemory", lambda s: _set(s["environment"], "SOMABRAIN_MEMORY_TOKEN", "t" * 40)),
        hard=True,
    ),
    Mutation(
        "the API without the service token in prod",
        "env",
        "somabrain/SOMABRAIN_MEMORY_TOKEN",
        k8s("somabrain.yaml", "Deployment", "somabrain", lambda o: _set(container(o), "env", [
            e for e in container(o)["env"] if e["name"] != "SOMABRAIN_MEMORY_TOKEN"])),
    ),
    Mutation(
        "API runs as root in k8s",
        "security",
        "somabrain/non-root",
        k8s(
            "somabrain.yaml",
            "Deployment",
            "somabrain",
            lambda o: [
                o["spec"]["template"]["spec"]["securityContext"].update(runAsNonRoot=False, runAsUser=0),
                container(o)["securityContext"].update(runAsNonRoot=False, runAsUser=0),
            ],
        ),
    ),
    Mutation("compose service missing from the mapping table", "mapping", "sb_cache", _add_compose_service),
    Mutation(
        "one-shot sb_dbinit is no initContainer of SomaMemory's workload",
        "mapping",
        "sb_dbinit",
        k8s("somamemory.yaml", "Deployment", "somamemory", _drop_init_container("db-init")),
    ),
    Mutation(
        "SomaMemory no longer waits for db-init in prod",
        "dependencies",
        "somamemory->sb_dbinit",
        k8s("somamemory.yaml", "Deployment", "somamemory", _drop_init_container("db-init")),
    ),
    Mutation(
        "placeholder Secret shipped in the manifests",
        "mapping",
        "k8s:secret/somabrain-postgres",
        _ship_placeholder_secret,
    ),
    Mutation(
        "env refers to a Secret key the operator does not create",
        "mapping",
        "k8s:Deployment/somabrain",
        k8s("somabrain.yaml", "Deployment", "somabrain",
            lambda o: _set(_secret_key_ref(o, "POSTGRES_PASSWORD"), "key", "PASSWORD")),
    ),
    Mutation(
        "JWT key mounted from a Secret nobody creates",
        "mapping",
        "k8s:secret/somabrain-secrets",
        k8s("somabrain.yaml", "Deployment", "somabrain", lambda o: _set(_jwt_volume(o), "secretName", "somabrain-jwt")),
    ),
    Mutation(
        "dev TLS front keeps nginx's 1m body limit",
        "ingress",
        "sb_ingress/body-size",
        _nginx("client_max_body_size 32m;", "client_max_body_size 1m;"),
    ),
    Mutation(
        "Ingress body size annotation lowered",
        "ingress",
        "sb_ingress/body-size",
        _ingress(lambda o: _set(o["metadata"]["annotations"], "nginx.ingress.kubernetes.io/proxy-body-size", "8m")),
    ),
    Mutation(
        "dev TLS front accepts TLS 1.1",
        "ingress",
        "sb_ingress/tls-protocols",
        _nginx("ssl_protocols TLSv1.2 TLSv1.3;", "ssl_protocols TLSv1.1 TLSv1.2 TLSv1.3;"),
    ),
    Mutation(
        "dev TLS front serves another host",
        "ingress",
        "sb_ingress/tls-host",
        _nginx("server_name somabrain.internal;", "server_name brain.internal;"),
    ),
    Mutation(
        "Ingress TLS from another Secret",
        "ingress",
        "sb_ingress/certificate",
        _ingress(lambda o: _set(o["spec"]["tls"][0], "secretName", "somabrain-tls-manual")),
    ),
    Mutation(
        "dev TLS front proxies to SomaMemory",
        "ingress",
        "sb_ingress/backend/",
        _nginx("set $backend http://somabrain:9696;", "set $backend http://somamemory:9595;"),
    ),
    Mutation(
        "API left off the front's network",
        "ingress",
        "sb_ingress/backend/",
        dev("somabrain", lambda s: _remove_network(s, "ingress")),
    ),
]


def test_at_least_fifteen_mutations_cover_every_dimension() -> None:
    from conformance.parity.findings import DIMENSIONS

    assert len({m.id for m in MUTATIONS}) == len(MUTATIONS) >= 15
    assert {m.dimension for m in MUTATIONS} == set(DIMENSIONS)


def test_clean_tree_passes(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_gate(tree, capsys)
    assert result.code == 0, result.drifts()
    assert not result.drifts()
    assert any(f["status"] == "accepted" for f in result.findings)  # accepted differences are shown
    assert {f["status"] for f in result.findings} <= {"ok", "accepted"}


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.id for m in MUTATIONS])
def test_mutation_is_caught(tree: Path, capsys: pytest.CaptureFixture[str], mutation: Mutation) -> None:
    mutation.apply(tree)
    result = run_gate(tree, capsys)
    assert result.code == 1, f"gate passed a tree with: {mutation.id}"
    assert (mutation.dimension, mutation.subject) in result.drifts(), result.drifts()
    finding = result.by_subject(mutation.dimension, mutation.subject)
    assert finding.get("hard", False) is mutation.hard, finding


def test_secrets_the_operator_creates_resolve_as_provided(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """k8s/ ships no Secret: the references to the ones scripts/k8s_secrets.sh creates resolve (and say so)."""
    result = run_gate(tree, capsys)
    for name in ("somabrain-postgres", "somabrain-secrets"):
        finding = result.by_subject("mapping", f"k8s:secret/{name}")
        assert finding["status"] == "ok" and "provided by the operator (scripts/k8s_secrets.sh)" in finding["prod"]
    assert not [f for f in result.findings if f["subject"].startswith("servicemonitor/")]  # opt-in, not in k8s/


def test_gate_holds_on_the_monitoring_overlay_and_compares_the_servicemonitors(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_gate(tree, capsys, "--k8s", str(tree / "k8s" / "overlays" / "monitoring"))
    assert result.code == 0, result.drifts()
    for name in ("somabrain-metrics", "somamemory-metrics"):
        assert result.by_subject("ports", f"servicemonitor/{name}")["status"] == "ok"
    scrape = result.by_subject("connectivity", "prometheus->somabrain:9697")
    assert "ServiceMonitor somabrain-metrics" in (scrape.get("reason") or ""), scrape
