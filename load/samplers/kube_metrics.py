"""Prod: sample every pod of a namespace through the Kubernetes metrics API, limits from the pod spec.

Per tick: `GET /api/v1/namespaces/NS/pods` (limits from spec.containers[].resources.limits, restartCount and
lastState.terminated.reason from status), and the usage from one of two sources, chosen by `check()`:
- `metrics.k8s.io` (metrics-server): `GET /apis/metrics.k8s.io/v1beta1/namespaces/NS/pods`, working-set memory
  and CPU averaged over the metric window, per container. Namespace-scoped: the Role in k8s/base/rbac.yaml
  grants it.
- the kubelet's own summary API, when no metrics API is served (the local cluster of `make cluster` runs no
  metrics-server): `GET /api/v1/nodes/NODE/proxy/stats/summary` for each node the pods run on, the same
  working-set and CPU figures (cAdvisor's, which metrics-server reads too). It needs `nodes/proxy` (cluster-scoped,
  an administrator's right).
A pod's sample is the sum over its declared containers (an ephemeral debug container, such as the conformance
probes' `sb-probe`, is not the workload's); its limit is the sum of theirs (None when any container has none).

Both sources refresh every 10-60 s, so polling once a second sees each reading several times: a reading is
recorded once, at its own timestamp. CPU throttling is exposed by neither; saturation (use over limit) stands in.

Workload names are `APP/POD` where APP is the pod's `app` label (else app.kubernetes.io/name, else the pod name).

Every call goes through a `targets.kube.KubeTarget` (its client, from its context and kubeconfig) and
`targets.kube_api.get`. Not through `KubeTarget.pods(workload)` or `declared`: the sampler watches every pod of
the namespace, not only the inventory's workloads (a scratch Deployment, an old ReplicaSet's pod during a rollout
use memory too), and a pod's limit is what that pod runs with, summed over its containers, not the current
template's first container.
"""

from __future__ import annotations

import time
from typing import Any

from conformance.loaders.units import k8s_quantity
from load.model import Event, Sample
from load.samplers.base import Sampler
from load.samplers.docker_stats import parse_timestamp
from targets.base import TargetUnreachable
from targets.kube import KubeTarget
from targets.kube_api import KubeError
from targets.kube_api import get as kube_get

METRICS_PATH = "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods"
PODS_PATH = "/api/v1/namespaces/{ns}/pods"
SUMMARY_PATH = "/api/v1/nodes/{node}/proxy/stats/summary"


class KubeUnavailable(RuntimeError):
    """No cluster, or no metrics API, to sample."""


def workload_name(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata", {})
    labels = meta.get("labels") or {}
    app = labels.get("app") or labels.get("app.kubernetes.io/name") or meta.get("name", "?")
    return f"{app}/{meta.get('name', '?')}"


def pod_limits(pod: dict[str, Any]) -> tuple[int | None, float | None]:
    memory: float | None = 0.0
    cpu: float | None = 0.0
    for container in pod.get("spec", {}).get("containers", []):
        limits = (container.get("resources") or {}).get("limits") or {}
        memory = None if memory is None or "memory" not in limits else memory + k8s_quantity(limits["memory"])
        cpu = None if cpu is None or "cpu" not in limits else cpu + k8s_quantity(limits["cpu"])
    return (int(memory) if memory else None), (cpu or None)


def restart_count(pod: dict[str, Any]) -> int:
    return sum(int(s.get("restartCount", 0)) for s in pod.get("status", {}).get("containerStatuses") or [])


def oom_terminations(pod: dict[str, Any]) -> list[tuple[str, float]]:
    """(container, finishedAt) of every OOMKilled termination the pod status still shows."""
    found = []
    for status in pod.get("status", {}).get("containerStatuses") or []:
        for key in ("state", "lastState"):
            terminated = (status.get(key) or {}).get("terminated") or {}
            if terminated.get("reason") == "OOMKilled":
                finished = terminated.get("finishedAt")
                found.append((status.get("name", "?"), parse_timestamp(finished) if finished else time.time()))
    return found


def is_running(pod: dict[str, Any]) -> bool:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return pod.get("status", {}).get("phase") == "Running" and all("running" in (s.get("state") or {})
                                                                   for s in statuses)


def sample_from_metrics(pod_metrics: dict[str, Any], pod: dict[str, Any]) -> Sample:
    memory = sum(k8s_quantity(c["usage"]["memory"]) for c in pod_metrics.get("containers", []))
    cpu = sum(k8s_quantity(c["usage"]["cpu"]) for c in pod_metrics.get("containers", []))
    memory_limit, cpu_limit = pod_limits(pod)
    return Sample(t=parse_timestamp(pod_metrics["timestamp"]), workload=workload_name(pod), memory_bytes=int(memory),
                  memory_limit=memory_limit, cpu_cores=cpu, cpu_limit=cpu_limit, running=is_running(pod),
                  restart_count=restart_count(pod))


def declared_containers(pod: dict[str, Any]) -> set[str]:
    return {c.get("name", "") for c in pod.get("spec", {}).get("containers", [])}


def sample_from_summary(summary_pod: dict[str, Any], pod: dict[str, Any]) -> tuple[str, Sample] | None:
    """(reading's timestamp, Sample) from one pod of a kubelet summary; None before the kubelet has figures."""
    ours = [c for c in summary_pod.get("containers") or [] if c.get("name") in declared_containers(pod)]
    readings = [(c.get("memory") or {}, c.get("cpu") or {}) for c in ours]
    if not readings or any("workingSetBytes" not in m or "usageNanoCores" not in c for m, c in readings):
        return None
    stamp = max(str(c.get("time") or m.get("time") or "") for m, c in readings)
    if not stamp:
        return None
    memory_limit, cpu_limit = pod_limits(pod)
    return stamp, Sample(t=parse_timestamp(stamp), workload=workload_name(pod),
                         memory_bytes=int(sum(int(m["workingSetBytes"]) for m, _ in readings)),
                         memory_limit=memory_limit, cpu_cores=sum(int(c["usageNanoCores"]) for _, c in readings) / 1e9,
                         cpu_limit=cpu_limit, running=is_running(pod), restart_count=restart_count(pod))


class KubeSampler(Sampler):
    """`target`: the KubeTarget of `namespace` to read through (its client, made from its context and kubeconfig);
    by default one is made from `context` and `kubeconfig`."""

    def __init__(self, namespace: str, context: str | None = None, kubeconfig: str | None = None,
                 target: KubeTarget | None = None) -> None:
        super().__init__()
        if target is not None and target.namespace != namespace:
            raise ValueError(f"KubeSampler({namespace!r}): the target is of namespace {target.namespace!r}")
        self.target = target or KubeTarget(context=context, namespace=namespace, kubeconfig=kubeconfig)
        self.namespace = namespace
        self.context = self.target.context
        self.kubeconfig = self.target.kubeconfig
        self._seen: set[tuple[str, str]] = set()  # (pod, metrics timestamp) already recorded
        self._restarts: dict[str, int] = {}
        self._ooms: set[tuple[str, str, float]] = set()
        self.source = "metrics.k8s.io"  # or "kubelet summary": check() decides

    def get(self, path: str) -> dict[str, Any]:
        """GET an API path through the target's client (targets.kube_api.get); every failure is KubeUnavailable,
        on one line: no client (no kubeconfig, no such context), the API's answer, or no answer."""
        from kubernetes.client.exceptions import ApiException

        try:
            return kube_get(self.target, path)
        except TargetUnreachable as exc:
            raise KubeUnavailable(f"--env prod: {exc}") from exc
        except KubeError as exc:  # "GET PATH: STATUS the API's message"
            raise KubeUnavailable(" ".join(str(exc).split())) from exc
        except ApiException as exc:
            raise KubeUnavailable(f"GET {path}: {exc.status} {exc.reason}") from exc
        except Exception as exc:  # urllib3 connection errors come in many types
            raise KubeUnavailable(f"GET {path}: {' '.join(str(exc).split())}") from exc

    def check(self) -> None:
        pods = self.get(PODS_PATH.format(ns=self.namespace)).get("items", [])
        try:
            self.get(METRICS_PATH.format(ns=self.namespace))
            self.source = "metrics.k8s.io"
            return
        except KubeUnavailable as metrics_exc:
            nodes = sorted({str((p.get("spec") or {}).get("nodeName") or "") for p in pods} - {""})
            if not nodes:
                raise KubeUnavailable(f"{metrics_exc}, and no pod of namespace {self.namespace} is on a node yet "
                                      "whose kubelet could be asked instead") from metrics_exc
            try:
                self.get(SUMMARY_PATH.format(node=nodes[0]))
            except KubeUnavailable as summary_exc:
                raise KubeUnavailable(
                    f"no source of pod usage: {metrics_exc} (is metrics-server installed? kind: see k8s/README.md); "
                    f"and the kubelet summary API: {summary_exc} (it needs nodes/proxy)") from summary_exc
            self.source = "kubelet summary"

    def _usage(self, pods: dict[str, dict[str, Any]]) -> list[tuple[str, str, Sample]]:
        """(pod, reading's timestamp, sample) from the chosen source."""
        out: list[tuple[str, str, Sample]] = []
        if self.source == "metrics.k8s.io":
            for item in self.get(METRICS_PATH.format(ns=self.namespace)).get("items", []):
                name = item["metadata"]["name"]
                if name in pods:
                    out.append((name, item["timestamp"], sample_from_metrics(item, pods[name])))
            return out
        for node in sorted({str((p.get("spec") or {}).get("nodeName") or "") for p in pods.values()} - {""}):
            for item in self.get(SUMMARY_PATH.format(node=node)).get("pods") or []:
                ref = item.get("podRef") or {}
                if ref.get("namespace") != self.namespace or ref.get("name") not in pods:
                    continue
                reading = sample_from_summary(item, pods[ref["name"]])
                if reading is not None:
                    out.append((ref["name"], reading[0], reading[1]))
        return out

    def tick(self) -> None:
        pods = {p["metadata"]["name"]: p for p in self.get(PODS_PATH.format(ns=self.namespace)).get("items", [])}
        usage = self._usage(pods)
        now = time.time()
        for name, pod in pods.items():
            workload = workload_name(pod)
            count = restart_count(pod)
            before = self._restarts.setdefault(name, count)
            if count > before:
                self.recording.events.append(Event(now, workload, "restart", f"restartCount {before} -> {count}"))
                self._restarts[name] = count
            for container, finished in oom_terminations(pod):
                key = (name, container, finished)
                if key not in self._ooms:
                    self._ooms.add(key)
                    if finished >= self.started_at:
                        self.recording.events.append(Event(finished, workload, "oom", f"container {container}"))
            if not is_running(pod):
                memory_limit, cpu_limit = pod_limits(pod)
                self.recording.samples.append(Sample(now, workload, None, memory_limit, None, cpu_limit,
                                                     running=False, restart_count=count))
        for name, stamp, sample in usage:
            if (name, stamp) in self._seen:
                continue
            self._seen.add((name, stamp))
            self.recording.samples.append(sample)
