"""The one expectation table: what both environments must show, taken from the deployment guide (the seed)
and ../shared/DESIGN.md. Every check of the suite is parametrized from here; nothing else hard-codes a
service name, port, health key or TLS fact.

Workloads are named by a logical key that is the same in both environments (`redis`, `postgres`, ...);
`dev_name` is the compose service, `prod_name` the Kubernetes Service (None = outside the cluster).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

NAMESPACE = "somabrain-prod"
CLUSTER_DOMAIN = "svc.cluster.local"
ENVIRONMENTS = ("dev", "prod")


@dataclass(frozen=True)
class ServiceExpectation:
    key: str  # logical workload name, the same in both environments
    port: int  # the port other workloads use (compose in-network port = k8s Service port)
    dev_name: str  # compose service name (= its DNS name on the compose networks)
    prod_name: str | None  # k8s Service in NAMESPACE; None = external to the cluster
    prod_workload: str | None  # k8s Deployment/StatefulSet behind it
    guide_image: str
    purpose: str

    def host(self, env: str, namespace: str = NAMESPACE) -> str | None:
        """The DNS name the somabrain workload uses for this service in `env` (None: not in `env`)."""
        if env == "dev":
            return self.dev_name
        if self.prod_name is None:
            return None
        return f"{self.prod_name}.{namespace}.{CLUSTER_DOMAIN}"

    def in_env(self, env: str) -> bool:
        return env == "dev" or self.prod_name is not None


# The seed's service table (DESIGN.md "These are the facts it fixes").
SERVICES: tuple[ServiceExpectation, ...] = (
    ServiceExpectation("somabrain", 9696, "somabrain", "somabrain", "somabrain",
                       "built from our Dockerfile", "the API"),
    ServiceExpectation("somamemory", 9595, "somamemory", "somamemory", "somamemory",
                       "python:3.13-slim runtime (our image)", "external memory service"),
    ServiceExpectation("redis", 6379, "sb_redis", "sb-redis", "sb-redis",
                       "redis:7.2-alpine", "cache, rate limiting, working memory"),
    ServiceExpectation("kafka", 9092, "kafka", None, None,
                       "bitnami/kafka:latest (pinned instead)", "event streaming, audit pipeline"),
    ServiceExpectation("opa", 8181, "sb_opa", "sb-opa", "sb-opa",
                       "openpolicyagent/opa:0.48.0", "policy enforcement engine"),
    ServiceExpectation("prometheus", 9090, "prometheus", None, None,
                       "prom/prometheus:v2.49.0", "metrics collection"),
    ServiceExpectation("postgres", 5432, "sb_postgres", "postgres", "postgres",
                       "postgres:15-alpine", "persistent data storage"),
)
BY_KEY: Mapping[str, ServiceExpectation] = {s.key: s for s in SERVICES}

# The workload that the seed's DNS matrix is seen from (its env vars name the other services).
API = BY_KEY["somabrain"]
API_PORT = 9696
PUBLIC_PORT = 9999  # the TLS ingress's host port (and somabrain-public's, k8s/components/public-loadbalancer)


def dependencies(env: str) -> list[ServiceExpectation]:
    """The services the API resolves and connects to in `env` (the seed's connectivity matrix)."""
    return [s for s in SERVICES if s.key not in ("somabrain", "prometheus") and s.in_env(env)]


# --- /health ----------------------------------------------------------------------------------------------
# The seed's exact health keys and values (dotted paths into the JSON). More keys may exist beside them.
HEALTH_EXACT: Mapping[str, Any] = {
    "ok": True,
    "components.memory.http": True,
    "components.wm_items": "tenant-scoped",
    "predictor_provider": "mahal",
    "strict_real": True,
    "ready": True,
}


def lookup(document: Any, dotted: str) -> Any:
    """`lookup(doc, "a.b")` = doc["a"]["b"]; raises KeyError naming the missing part."""
    node = document
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


@dataclass(frozen=True)
class ReadinessRequirement:
    key: str
    seed_text: str  # the seed's wording, verbatim
    evidence: str  # the /health paths that show it
    holds: Callable[[Mapping[str, Any]], bool]


def _ok(component: str) -> Callable[[Mapping[str, Any]], bool]:
    def check(health: Mapping[str, Any]) -> bool:
        return lookup(health, f"components.{component}.ok") is True

    return check


def _opa(health: Mapping[str, Any]) -> bool:
    opa = lookup(health, "components.opa")
    return opa.get("ok") is True or opa.get("fail_closed") is False


# The seed's "Readiness Requirements", one row each.
READINESS: tuple[ReadinessRequirement, ...] = (
    ReadinessRequirement(
        "predictor-real", "Non-stub predictor provider (`mahal` not `stub`)",
        "predictor_provider, components.predictor.real",
        lambda h: h.get("predictor_provider") == "mahal" and lookup(h, "components.predictor.real") is True,
    ),
    ReadinessRequirement(
        "memory-reachable", "External memory service reachable", "components.memory.http",
        lambda h: lookup(h, "components.memory.http") is True,
    ),
    ReadinessRequirement("postgres-connected", "Database connectivity established", "components.postgres.ok",
                         _ok("postgres")),
    ReadinessRequirement("redis-operational", "Redis cache operational", "components.redis.ok", _ok("redis")),
    ReadinessRequirement(
        "opa-responsive", "OPA policy engine responsive (if fail-closed mode)",
        "components.opa.ok, components.opa.fail_closed", _opa,
    ),
)

# Environment the workloads must declare (the seed's "Strict Real Mode Settings" and auth split).
STRICT_ENV: Mapping[str, str] = {
    "SOMABRAIN_STRICT_REAL": "1",
    "SOMABRAIN_FORCE_FULL_STACK": "1",
    "SOMABRAIN_REQUIRE_MEMORY": "1",
    "SOMABRAIN_PREDICTOR_PROVIDER": "mahal",
}
AUTH_DISABLED: Mapping[str, str] = {"dev": "1", "prod": "0"}

# --- TLS ----------------------------------------------------------------------------------------------------
TLS_HOST = "somabrain.internal"
TLS_SECRET = "somabrain-tls"  # noqa: S105 - a Secret's name, not a password
TLS_SECRET_TYPE = "kubernetes.io/tls"  # noqa: S105 - a Secret type
TLS_REFUSED = ("TLSv1", "TLSv1_1")
TLS_ACCEPTED = ("TLSv1_2", "TLSv1_3")
TLS_MIN_DAYS_DEFAULT = 14
# dev: the compose TLS front that mirrors the Ingress (compose/nginx/nginx.conf), and its container port; the
# endpoint is 127.0.0.1 and the port compose publishes it on (INGRESS_HOST_PORT, default 9999 as in kind).
TLS_DEV_SERVICE = "sb_ingress"
TLS_DEV_PORT = 8443

# --- Secrets that are not in the manifests ----------------------------------------------------------------
# k8s/ ships no Secret, so that `kubectl apply -k` never overwrites real credentials: scripts/k8s_secrets.sh (or
# the operator's secret manager) creates these in NAMESPACE before the first apply, with these keys. A manifest's
# reference to one of them is "provided by the operator"; a reference to any other missing Secret or key is an
# error. (The TLS Secret, TLS_SECRET, comes from scripts/setup_ingress_tls.sh or a certificate manager.)
OPERATOR_SECRETS: Mapping[str, tuple[str, ...]] = {
    "somabrain-postgres": ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"),  # the superuser (db-init only)
    "somabrain-postgres-app": ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"),  # the apps' runtime role
    "somabrain-secrets": ("jwt_pub.pem",),
    "somabrain-memory-token": ("token",),
}
OPERATOR_SECRETS_SCRIPT = "scripts/k8s_secrets.sh"

# --- NetworkPolicy ------------------------------------------------------------------------------------------
# Sources from which connectivity is probed live, and the destinations (with their ports) of the truth table.
NETPOL_PEERS: tuple[ServiceExpectation, ...] = SERVICES
# The guide's own policy, verbatim: static mode must report it as blocking DNS and ingress.
GUIDE_POLICY_FIXTURE = "tests/deploy/fixtures/guide_networkpolicy.yaml"
INGRESS_CONTROLLER_NAMESPACE = "ingress-nginx"
MONITORING_NAMESPACE = "monitoring"

# The flows the production NetworkPolicies must allow between in-cluster workloads (k8s/base/networkpolicies.yaml
# states the same list); every other in-cluster flow must be denied. Plus: every pod -> kube-dns 53 UDP+TCP,
# the ingress controller -> somabrain, and the monitoring namespace -> somabrain, somamemory.
PROD_INTENDED_FLOWS: frozenset[tuple[str, str]] = frozenset({
    ("somabrain", "somamemory"),
    ("somabrain", "redis"),
    ("somabrain", "opa"),
    ("somabrain", "postgres"),
    ("somamemory", "postgres"),
})
# What the monitoring namespace scrapes, and on which port: each app's metrics port (SOMABRAIN_METRICS_PORT), which
# serves /metrics and nothing else. Monitoring may reach that port, and not the app's own.
METRICS_PORTS: Mapping[str, int] = {"somabrain": 9697, "somamemory": 9596}
SCRAPED_BY_MONITORING: tuple[str, ...] = tuple(METRICS_PORTS)
# Labels of the peers outside somabrain-prod (the ingress-nginx controller and a Prometheus in `monitoring`).
INGRESS_CONTROLLER_LABELS: Mapping[str, str] = {
    "app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"}
MONITORING_LABELS: Mapping[str, str] = {"app.kubernetes.io/name": "prometheus"}
DNS_COLUMN = "dns"  # the truth table's column for "can resolve names" (cluster DNS / Docker's resolver)

# --- API contract -------------------------------------------------------------------------------------------
# The routes the served /openapi.json must document (DESIGN.md "API routes"); schemathesis runs each of them.
# GET /metrics is not among them: it is served on the metrics port alone (METRICS_PORTS), and checked there.
API_OPERATIONS: tuple[tuple[str, str], ...] = (
    ("GET", "/health"), ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/openapi.json"),
    ("POST", "/remember"), ("POST", "/recall"), ("POST", "/act"), ("DELETE", "/memory/{item_id}"),
)
JWT_ROLES = ("admin",)  # the conformance token's roles: admin may call every route (k8s/policy/somabrain.rego)
JWT_TENANT = "conformance"

# OpenAPI links for the stateful phase, used only when the served document declares none (schemathesis needs
# links to chain calls). They state the contract DESIGN.md gives: an id from POST /remember deletes that item,
# for the same tenant.
STATEFUL_LINKS: Mapping[tuple[str, str, str], Mapping[str, Any]] = {
    ("/remember", "post", "201"): {
        "DeleteRemembered": {
            "operationId": "delete_memory",
            "parameters": {"item_id": "$response.body#/id", "header.X-Tenant-ID": "$request.header.X-Tenant-ID"},
        },
    },
}
