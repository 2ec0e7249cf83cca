"""Where a finding's prod side is written: the file of k8s/ (as kustomize reports each object's origin) and the
object, for the gate's messages ("from: k8s/base/redis.yaml (Deployment/sb-redis)").

The comparators name their subjects in a few fixed shapes; this reads the object back from the subject:
`SERVICE/...` and `SERVICE:/mount` (the workload of a compose service, by the inventory), `service/NAME...`
(a Service), `k8s:KIND/NAME`, `servicemonitor/NAME`, `ingress/...` and the dev TLS front's `sb_ingress/...` (the
Ingress), and every `connectivity` subject (the NetworkPolicies, which decide it).
"""

from __future__ import annotations

import re

from conformance.inventory import by_compose
from conformance.loaders.k8s import Manifests, Resource

_LEADING_NAME = re.compile(r"^([A-Za-z0-9_.-]+?)(?:->|/|:|$)")


def prod_origin(dimension: str, subject: str, manifests: Manifests) -> str | None:
    """`FILE (KIND/NAME)` of the object the finding's prod value comes from, or None when it has none (a
    compose service without a counterpart, an external service)."""
    objects = _objects(dimension, subject, manifests)
    described = sorted({f"{manifests.origin(o)} ({o['kind']}/{o['metadata']['name']})" if len(objects) == 1
                        else str(manifests.origin(o)) for o in objects if manifests.origin(o)})
    return ", ".join(described) or None


def _objects(dimension: str, subject: str, manifests: Manifests) -> list[Resource]:
    if dimension == "connectivity":
        return manifests.of_kind("NetworkPolicy")
    kind, _, rest = subject.partition(":") if subject.startswith("k8s:") else ("", "", "")
    if kind:
        wanted, _, name = rest.partition("/")
        return [r for r in manifests.resources if r["kind"].lower() == wanted.lower() and r["metadata"]["name"] == name]
    head, _, tail = subject.partition("/")
    if head == "service":
        return _named(manifests, "Service", re.split(r"[:/]", tail)[0])
    if head == "servicemonitor":
        return _named(manifests, "ServiceMonitor", tail)
    match = _LEADING_NAME.match(subject)
    entry = by_compose(match.group(1)) if match else None
    if head == "ingress" or (entry is not None and entry.ingress):
        return manifests.of_kind("Ingress")
    if entry is None or entry.workload is None or entry.workload not in manifests.workloads:
        return []
    return [manifests.workloads[entry.workload].raw]


def _named(manifests: Manifests, kind: str, name: str) -> list[Resource]:
    found = manifests.find(kind, name)
    return [found] if found is not None else []
