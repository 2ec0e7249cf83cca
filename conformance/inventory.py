"""The service inventory: what our deployment runs, one record per compose service, with its counterpart in
Kubernetes. The only table of our services: the parity gate, the live conformance suite, the operator tools
(ops/), the load harness (load/) and the deploy tests read every service name, port and pairing from here.

It lives in conformance/ because that is the layer ops/ and load/ already share (the environment targets), and
it is knowledge about the deployment, not about the service's code: it imports nothing of `brain`.

A `Service` runs for as long as the stack runs and serves a port:
- `key`: its logical name, the same in both environments (`redis`): the live suite's check ids, the targets'
  workload names and the operator tools use it;
- `compose`: the compose service, which is also its DNS name on the compose networks (`sb_redis`): the parity
  gate's subjects use it;
- `port`: the port its clients use (the compose in-network port = the k8s Service port);
- `prod`: how production runs it, either
  - `InCluster`: a Deployment or StatefulSet in NAMESPACE, the container in it that is the service, and the
    Services in front of it, the first being the name other workloads use (compose `sb_redis:6379` <-> k8s
    `sb-redis:6379`); or
  - `Outside`: not in the cluster; what serves it there instead, and how that appears to the NetworkPolicy
    evaluator when it opens connections to our pods (`peer`, a pod in another namespace). Running outside is a
    difference in itself: the gate reports it (dimension `mapping`) and the exceptions file must accept it;
- `uses`: the services it connects to (keys), which the compose networks and the NetworkPolicies must allow
  (Prometheus: the apps' metrics ports);
- `metrics_port`: the port where an app serves /metrics and nothing else, the only one monitoring may reach;
- `ingress`: set on the dev TLS front, the k8s Ingress it mirrors (served in prod by the ingress controller);
- `our_image`: it runs the image built from our Dockerfile (one image, both apps);
- `guide`: its row of the deployment guide's service table (DESIGN.md), None for what the guide does not list.

A `OneShot` is a compose service that runs once and exits before the apps start (a bootstrap step); production
runs the same step as an initContainer (`init_container`) of the workloads of the services in `of`. It serves no
port and has no workload or Service of its own.

A compose service, workload or Service missing here is drift (the gate's dimension `mapping`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from conformance.netpol.model import Pod, Port

NAMESPACE = "somabrain-prod"
CLUSTER_DOMAIN = "svc.cluster.local"


@dataclass(frozen=True)
class InCluster:
    """Production runs the service in NAMESPACE."""

    workload: str  # the Deployment or StatefulSet
    kind: str  # "Deployment" | "StatefulSet"
    container: str  # its container that is the service
    services: tuple[str, ...]  # the k8s Services in front of it; the first is the name clients use

    @property
    def ref(self) -> str:
        """`statefulset/postgres`, as kubectl names it."""
        return f"{self.kind.lower()}/{self.workload}"


@dataclass(frozen=True)
class Outside:
    """Production does not run the service in the cluster."""

    what: str  # what serves it there instead
    peer: Pod | None = None  # how that appears to the NetworkPolicies, when it connects to our pods


@dataclass(frozen=True)
class Guide:
    """A row of the deployment guide's service table."""

    image: str
    purpose: str


@dataclass(frozen=True)
class Service:
    key: str
    compose: str
    port: int
    prod: InCluster | Outside
    uses: tuple[str, ...] = ()
    metrics_port: int | None = None
    ingress: str | None = None
    our_image: bool = False
    guide: Guide | None = None

    @property
    def in_cluster(self) -> InCluster | None:
        return self.prod if isinstance(self.prod, InCluster) else None

    @property
    def outside(self) -> Outside | None:
        return self.prod if isinstance(self.prod, Outside) else None

    @property
    def workload(self) -> str | None:
        """The Deployment/StatefulSet that runs it in prod (None: outside the cluster)."""
        return self.in_cluster.workload if self.in_cluster else None

    @property
    def k8s_services(self) -> tuple[str, ...]:
        """The k8s Services in front of it in prod (none: outside the cluster)."""
        return self.in_cluster.services if self.in_cluster else ()

    @property
    def k8s_service(self) -> str | None:
        """The k8s Service its clients use in prod (None: outside the cluster)."""
        return self.k8s_services[0] if self.k8s_services else None

    @property
    def peer(self) -> Pod | None:
        """How what serves it outside the cluster appears to the NetworkPolicies (None: in the cluster, or never
        a client of our pods)."""
        return self.outside.peer if self.outside else None

    def in_env(self, env: str) -> bool:
        return env == "dev" or self.in_cluster is not None

    def host(self, env: str, namespace: str = NAMESPACE) -> str | None:
        """The DNS name other workloads use for it in `env` (None: not in `env`)."""
        if env == "dev":
            return self.compose
        if self.k8s_service is None:
            return None
        return f"{self.k8s_service}.{namespace}.{CLUSTER_DOMAIN}"


@dataclass(frozen=True)
class OneShot:
    key: str
    compose: str
    init_container: str  # the initContainer's name in prod
    of: tuple[str, ...]  # keys of the services whose workloads run it
    uses: tuple[str, ...] = ()


# How the peers outside NAMESPACE appear to the NetworkPolicies: a Prometheus of the cluster's monitoring stack,
# and the ingress controller that serves our Ingress (the dev TLS front's counterpart; not its `peer`, since the
# controller's own flows to anything outside somabrain-prod are not ours to compare: the one that matters,
# controller -> Ingress backend, is checked on its own).
MONITORING = Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}, ports=(Port(9090, name="web"),))
INGRESS_CONTROLLER = Pod("ingress-nginx-controller", "ingress-nginx",
                         {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"})

SERVICES: tuple[Service, ...] = (
    # somabrain-public, the guide's plain-HTTP LoadBalancer, is the opt-in k8s/components/public-loadbalancer.
    Service("somabrain", "somabrain", 9696, InCluster("somabrain", "Deployment", "somabrain", ("somabrain",)),
            uses=("somamemory", "redis", "kafka", "opa", "postgres"), metrics_port=9697, our_image=True,
            guide=Guide("built from our Dockerfile", "the API")),
    Service("somamemory", "somamemory", 9595, InCluster("somamemory", "Deployment", "somamemory", ("somamemory",)),
            uses=("postgres",), metrics_port=9596, our_image=True,
            guide=Guide("python:3.13-slim runtime (our image)", "external memory service")),
    Service("redis", "sb_redis", 6379, InCluster("sb-redis", "Deployment", "redis", ("sb-redis",)),
            guide=Guide("redis:7.2-alpine", "cache, rate limiting, working memory")),
    Service("kafka", "kafka", 9092,
            Outside("Kafka brokers outside the cluster (SOMABRAIN_KAFKA_URL + an egress ipBlock)"),
            guide=Guide("bitnami/kafka:latest (pinned instead)", "event streaming, audit pipeline")),
    Service("opa", "sb_opa", 8181, InCluster("sb-opa", "Deployment", "opa", ("sb-opa",)),
            guide=Guide("openpolicyagent/opa:0.48.0", "policy enforcement engine")),
    Service("prometheus", "prometheus", 9090,
            Outside("the cluster's monitoring stack (Prometheus Operator; ServiceMonitors)", peer=MONITORING),
            uses=("somabrain", "somamemory"), guide=Guide("prom/prometheus:v2.49.0", "metrics collection")),
    Service("postgres", "sb_postgres", 5432, InCluster("postgres", "StatefulSet", "postgres", ("postgres",)),
            guide=Guide("postgres:15-alpine", "persistent data storage")),
    # The dev TLS front (compose/nginx/nginx.conf) on its container port, which compose publishes on the host
    # (INGRESS_HOST_PORT); in prod the ingress controller serves Ingress somabrain in its place.
    Service("ingress", "sb_ingress", 8443,
            Outside("the ingress-nginx controller (cluster add-on, namespace ingress-nginx) serving Ingress somabrain"),
            uses=("somabrain",), ingress="somabrain"),
)
ONE_SHOTS: tuple[OneShot, ...] = (
    # The Postgres roles and schemas (`somabrain db-init`, brain/dbinit.py), before either app starts.
    OneShot("db-init", "sb_dbinit", "db-init", of=("somabrain", "somamemory"), uses=("postgres",)),
)

BY_KEY: Mapping[str, Service] = {s.key: s for s in SERVICES}
# The deployment guide's service table: the services the live suite checks in each environment.
SEED: tuple[Service, ...] = tuple(s for s in SERVICES if s.guide is not None)
API = BY_KEY["somabrain"]  # the workload the guide's DNS matrix is seen from, and the live probes run in
APPS: tuple[Service, ...] = tuple(s for s in SERVICES if s.our_image)
SCRAPED: tuple[Service, ...] = tuple(s for s in SERVICES if s.metrics_port is not None)
TLS_FRONT = next(s for s in SERVICES if s.ingress is not None)


def by_compose(name: str) -> Service | None:
    return next((s for s in SERVICES if s.compose == name), None)


def by_k8s_service(name: str) -> Service | None:
    return next((s for s in SERVICES if name in s.k8s_services), None)


def dependencies(env: str) -> list[Service]:
    """The services the API resolves and connects to in `env` (the guide's connectivity matrix)."""
    return [s for s in SERVICES if s.key in API.uses and s.in_env(env)]


def flows(env: str) -> list[tuple[Service | OneShot, Service]]:
    """(client, server) for every connection a service makes in `env`, both in `env`: what the compose networks
    (dev) or the NetworkPolicies (prod) must allow. A one-shot's flows count in dev only: in prod it runs inside
    the workloads of its `of`, whose own flows are listed."""
    found: list[tuple[Service | OneShot, Service]] = [
        (c, BY_KEY[u]) for c in SERVICES if c.in_env(env) for u in c.uses if BY_KEY[u].in_env(env)]
    if env == "dev":
        found += [(o, BY_KEY[u]) for o in ONE_SHOTS for u in o.uses]
    return found
