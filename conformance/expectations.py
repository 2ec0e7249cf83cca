"""What both environments must show, taken from the deployment guide (the seed) and ../shared/DESIGN.md: the
health document, the readiness rules, the strict-real settings, TLS, the operator's Secrets, the NetworkPolicy
checks and the API contract. The suite's checks are parametrized from here and from the service inventory
(conformance.inventory: every service's names, ports and pairing across the two environments); nothing else
hard-codes a health key or TLS fact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

PUBLIC_PORT = 9999  # the TLS ingress's host port (and somabrain-public's, k8s/components/public-loadbalancer)


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
# dev: the endpoint is the compose TLS front that mirrors the Ingress (inventory.TLS_FRONT), on 127.0.0.1 and the
# port compose publishes its container port on (INGRESS_HOST_PORT, default 9999 as in kind).

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
# The dev stack keeps the same credentials in its env file (.env.local, scripts/dev_up.sh), under these names: a
# Secret's key -> the env file's. (.env.local's POSTGRES_USER/POSTGRES_PASSWORD are the superuser's.) The PENDING
# key is the one `somabrain rotate postgres-password` keeps a new password under until it is current.
ENV_FILE_SECRETS: Mapping[str, Mapping[str, str]] = {
    "somabrain-postgres-app": {"POSTGRES_USER": "POSTGRES_APP_USER", "POSTGRES_PASSWORD": "POSTGRES_APP_PASSWORD",
                               "POSTGRES_PASSWORD_PENDING": "POSTGRES_APP_PASSWORD_PENDING"},
}

# --- NetworkPolicy ------------------------------------------------------------------------------------------
# The truth table's rows and columns are the guide's services (inventory.SEED); the flows the NetworkPolicies must
# allow between in-cluster workloads are those the inventory's services use (inventory.flows("prod");
# k8s/base/networkpolicies.yaml states the same list), and every other in-cluster flow must be denied. Plus: every
# pod -> kube-dns 53 UDP+TCP, the ingress controller -> somabrain, and monitoring -> each app's metrics port
# (inventory.SCRAPED), which serves /metrics and nothing else: monitoring may reach that port, not the app's own.
# The guide's own policy, verbatim: static mode must report it as blocking DNS and ingress.
GUIDE_POLICY_FIXTURE = "tests/deploy/fixtures/guide_networkpolicy.yaml"
DNS_COLUMN = "dns"  # the truth table's column for "can resolve names" (cluster DNS / Docker's resolver)

# --- API contract -------------------------------------------------------------------------------------------
# The routes the served /openapi.json must document (DESIGN.md "API routes"); schemathesis runs each of them.
# GET /metrics is not among them: it is served on the metrics port alone (inventory.SCRAPED), and checked there.
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
