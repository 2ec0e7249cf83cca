"""THE mapping table: which compose service is which Kubernetes workload and Service(s).

This file is the only place that pairs names across the two environments. Everything the comparators
need to know about naming comes from here:
- `workload`/`container`: the Deployment or StatefulSet (and its container) that runs the service;
- `services`: the Kubernetes Services in front of it; the first one is the in-cluster name that other
  workloads use (compose `sb_redis:6379` <-> k8s `sb-redis:6379`);
- `external`: set when production does not run the service in the cluster; the text says what does.
  An external service is a difference in itself (the `mapping` dimension reports it, and the
  exceptions file must accept it); its other dimensions are not compared.
- `peer`: how an external service appears to the NetworkPolicy evaluator (a pod in another namespace).
- `ingress`: the compose service is the dev TLS front that mirrors this k8s Ingress (served in prod by the
  ingress-nginx controller, external to the workloads here); the `ingress` dimension compares its nginx
  configuration with the Ingress: TLS host, certificate source, protocols, body size, backend.
A compose service, workload or Service missing from this table is drift (dimension `mapping`).
"""

from __future__ import annotations

from dataclasses import dataclass

from conformance.netpol import External, Pod, Port


@dataclass(frozen=True)
class ServiceMapping:
    compose: str
    workload: str | None = None
    container: str | None = None
    services: tuple[str, ...] = ()
    external: str | None = None
    peer: Pod | None = None
    ingress: str | None = None


MAPPING: tuple[ServiceMapping, ...] = (
    # somabrain-public, the seed's plain-HTTP LoadBalancer, is the opt-in k8s/components/public-loadbalancer.
    ServiceMapping("somabrain", "somabrain", "somabrain", ("somabrain",)),
    ServiceMapping("somamemory", "somamemory", "somamemory", ("somamemory",)),
    ServiceMapping("sb_redis", "sb-redis", "redis", ("sb-redis",)),
    ServiceMapping("sb_opa", "sb-opa", "opa", ("sb-opa",)),
    ServiceMapping("sb_postgres", "postgres", "postgres", ("postgres",)),
    ServiceMapping(
        "kafka",
        external="Kafka brokers outside the cluster (SOMABRAIN_KAFKA_URL + an egress ipBlock)",
    ),
    ServiceMapping(
        "prometheus",
        external="the cluster's monitoring stack (Prometheus Operator; ServiceMonitors)",
        peer=Pod(
            "prometheus",
            "monitoring",
            {"app.kubernetes.io/name": "prometheus"},
            ports=(Port(9090, name="web"),),
        ),
    ),
    ServiceMapping(
        "sb_ingress",
        # No peer: the controller's own flows (to anything outside somabrain-prod) are not ours to compare; the
        # one flow that matters, controller -> Ingress backend, is checked by `connectivity` (ingress-nginx->...)
        # and, for dev, by `ingress` (the front shares a network with the backend).
        external="the ingress-nginx controller (cluster add-on, namespace ingress-nginx) serving Ingress somabrain",
        ingress="somabrain",
    ),
)

# Who sends traffic into the cluster from outside the mapped services.
INGRESS_CONTROLLER = Pod(
    "ingress-nginx",
    "ingress-nginx",
    {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"},
)
# A client of a LoadBalancer Service: an address outside the cluster (TEST-NET-3, RFC 5737).
LOAD_BALANCER_CLIENT = External("load-balancer client", "203.0.113.10")


def by_compose(name: str) -> ServiceMapping | None:
    return next((m for m in MAPPING if m.compose == name), None)


def by_k8s_service(name: str) -> ServiceMapping | None:
    return next((m for m in MAPPING if name in m.services), None)


def by_workload(name: str) -> ServiceMapping | None:
    return next((m for m in MAPPING if m.workload == name), None)
