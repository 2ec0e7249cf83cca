"""The prod environment: a Kubernetes cluster, through the kubernetes Python client.

Workload `redis` is Deployment `sb-redis` in namespace somabrain-prod (see expectations.SERVICES); its pods
are found by the workload's own `spec.selector`. Probes run in a Running pod through the pod `exec`
websocket (`python3 -c <probe_script> <json>`): the image must carry python3 (ours does; for the others
only the probes that start there need it). Reads: Services, Endpoints, NetworkPolicies, Ingress, Secrets,
Namespaces, Deployments/StatefulSets and Pods.

Live runs need a cluster (kind under Tilt, or a real one). The code is tested here against an HTTP fake of
the API (tests/conformance/k8s_fake/), exec included.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from conformance.expectations import BY_KEY, NAMESPACE
from conformance.loaders.units import k8s_quantity
from conformance.targets.base import (
    PROBE_SCRIPT,
    Probe,
    ProbeError,
    ProbeResult,
    Target,
    TargetUnreachable,
    WorkloadSpec,
    decode_batch,
)

REQUEST_TIMEOUT = 10


class KubeTarget(Target):
    env = "prod"

    def describe(self) -> str:
        return f"kube context {self.context or '(current)'}, namespace {self.namespace}"

    def __init__(self, context: str | None = None, namespace: str = NAMESPACE, kubeconfig: str | None = None,
                 exec_timeout: float = 30.0) -> None:
        self.context = context
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.exec_timeout = exec_timeout
        self._api: Any = None

    # -- client --------------------------------------------------------------------------------------
    @property
    def api(self) -> Any:
        if self._api is None:
            from kubernetes import config
            from kubernetes.config.config_exception import ConfigException

            try:
                self._api = config.new_client_from_config(config_file=self.kubeconfig, context=self.context)
            except (ConfigException, OSError, TypeError) as exc:
                where = self.kubeconfig or "$KUBECONFIG or ~/.kube/config"
                ctx = f"context {self.context!r}" if self.context else "the current context"
                raise TargetUnreachable(
                    f"it needs a Kubernetes cluster: cannot load {ctx} from {where} ({exc}). "
                    "Create one (kind create cluster --config k8s/kind/cluster.yaml && tilt up) "
                    "or pass --kube-context") from exc
        return self._api

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    def _apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.api)

    def _net(self) -> Any:
        from kubernetes import client

        return client.NetworkingV1Api(self.api)

    def _get(self, path: str) -> Any:
        """GET an API path and return the JSON document (dicts: the API's own shapes). Raises ApiException."""
        from kubernetes.client.exceptions import ApiException

        path, _, query = path.partition("?")
        params = [tuple(kv.split("=", 1)) for kv in query.split("&") if kv] if query else None
        request = self.api.param_serialize("GET", path, query_params=params,
                                           header_params={"Accept": "application/json"},
                                           auth_settings=["BearerToken"])
        response = self.api.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=response.data.decode("utf-8", "replace"),
                                             data=None)
        return json.loads(response.data)

    def check_reachable(self) -> None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            self._get("/version")
        except (HTTPError, OSError, ApiException) as exc:
            host = getattr(self.api.configuration, "host", "?")
            raise TargetUnreachable(
                f"the Kubernetes API at {host} does not answer ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]}). Is the cluster running? (kind get clusters; "
                "kubectl --context ... cluster-info)") from exc
        try:
            self._get(f"/api/v1/namespaces/{self.namespace}")
        except ApiException as exc:
            if exc.status == 404:
                raise TargetUnreachable(
                    f"namespace {self.namespace!r} does not exist in this cluster. Deploy first: "
                    "tilt up (kind) or kubectl apply -k k8s/") from exc
            raise TargetUnreachable(f"cannot read namespace {self.namespace!r}: {exc.reason}") from exc

    # -- reads ---------------------------------------------------------------------------------------
    def items(self, kind_path: str) -> list[dict[str, Any]]:
        """List a namespaced collection, e.g. `api/v1/services`, `apis/networking.k8s.io/v1/ingresses`."""
        group, _, plural = kind_path.rpartition("/")
        doc = self._get(f"/{group}/namespaces/{self.namespace}/{plural}")
        # A real list carries kind and apiVersion once (NetworkPolicyList), not on its items; put them back on each
        # item, as kubectl does, so they read like the manifests (the NetworkPolicy evaluator keys on kind).
        kind = str(doc.get("kind", "")).removesuffix("List")
        return [{"apiVersion": doc.get("apiVersion"), "kind": kind, **item} for item in doc.get("items") or []]

    def services(self) -> list[dict[str, Any]]:
        return self.items("api/v1/services")

    def endpoints(self, name: str) -> dict[str, Any]:
        return dict(self._get(f"/api/v1/namespaces/{self.namespace}/endpoints/{name}"))

    def network_policies(self) -> list[dict[str, Any]]:
        return self.items("apis/networking.k8s.io/v1/networkpolicies")

    def ingresses(self) -> list[dict[str, Any]]:
        return self.items("apis/networking.k8s.io/v1/ingresses")

    def secret(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return dict(self._get(f"/api/v1/namespaces/{self.namespace}/secrets/{name}"))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def namespace_labels(self, name: str) -> dict[str, str]:
        from kubernetes.client.exceptions import ApiException

        try:
            doc = self._get(f"/api/v1/namespaces/{name}")
        except ApiException as exc:
            if exc.status == 404:
                return {"kubernetes.io/metadata.name": name}
            raise
        return dict((doc.get("metadata") or {}).get("labels") or {})

    def workload_object(self, workload: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        expectation = BY_KEY.get(workload)
        name = expectation.prod_workload if expectation else workload
        if name is None:
            return None
        for plural in ("deployments", "statefulsets"):
            try:
                return dict(self._get(f"/apis/apps/v1/namespaces/{self.namespace}/{plural}/{name}"))
            except ApiException as exc:
                if exc.status != 404:
                    raise
        return None

    def pods(self, workload: str) -> list[dict[str, Any]]:
        obj = self.workload_object(workload)
        if obj is None:
            return []
        selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        query = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        doc = self._get(f"/api/v1/namespaces/{self.namespace}/pods?labelSelector={query}")
        return list(doc.get("items") or [])

    def workload_names(self) -> list[str]:
        return [s.key for s in BY_KEY.values() if s.prod_workload and self.workload_object(s.key) is not None]

    # -- probes --------------------------------------------------------------------------------------
    @contextmanager
    def exec_core(self) -> Iterator[Any]:
        """A CoreV1Api on a private ApiClient, for one pod exec.

        kubernetes.stream swaps the client's call_api for its websocket one while an exec runs; two threads
        streaming on a shared client (the NetworkPolicy table probes every workload at once) can leave it
        swapped, and every later plain GET then fails as a "websocket handshake". Seen on a real cluster.
        """
        from kubernetes import client

        with client.ApiClient(self.api.configuration) as private:
            yield client.CoreV1Api(private)

    def serving_pod(self, workload: str) -> tuple[str, str]:
        """(pod, container) to run a probe in: a Ready pod that is not terminating, and the workload's own
        container, chosen by name (the workload's key: `redis` in Deployment sb-redis), not by position."""
        return pick_serving(self.pods(workload), workload, self.namespace)

    def run_probes(self, workload: str, probes: Sequence[Probe]) -> list[ProbeResult]:
        if not probes:
            return []
        pod, container = self.serving_pod(workload)
        payload = json.dumps([p.payload() for p in probes])
        with self.exec_core() as core:
            return self._exec_probes(core, pod, container, probes, payload)

    def _exec_probes(self, core: Any, pod: str, container: str, probes: Sequence[Probe],
                     payload: str) -> list[ProbeResult]:
        from kubernetes.stream import stream

        ws = stream(core.connect_get_namespaced_pod_exec, pod, self.namespace,
                    command=["python3", "-c", PROBE_SCRIPT, payload], container=container,
                    stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
        try:
            ws.run_forever(timeout=self.exec_timeout)
            if ws.is_open():
                raise ProbeError(f"pod {pod}: the probe did not finish within {self.exec_timeout:.0f} s")
            stdout, stderr = ws.read_stdout() or "", ws.read_stderr() or ""
            code = ws.returncode
        finally:
            ws.close()
        if code != 0:
            raise ProbeError(f"pod {pod}: the probe exited {code}: {(stderr or stdout).strip()[-400:]}")
        return decode_batch(probes, stdout, f"pod {pod}")

    # -- declarations --------------------------------------------------------------------------------
    def declared(self, workload: str) -> WorkloadSpec:
        obj = self.workload_object(workload)
        if obj is None:
            return WorkloadSpec(workload, {}, detail=f"no Deployment/StatefulSet for {workload!r}")
        pod_spec = obj["spec"]["template"]["spec"]
        container = pod_spec["containers"][0]
        env = self._env(container)
        limits = (container.get("resources") or {}).get("limits") or {}
        probes = {k: container[f"{k}Probe"] for k in ("readiness", "liveness", "startup") if container.get(f"{k}Probe")}
        # A terminating pod (an old ReplicaSet's, after a rollout) is on its way out: it neither counts as a
        # replica nor makes the workload unready. Seen on the real cluster right after `somabrain rollout`.
        pods = [p for p in self.pods(workload) if not p["metadata"].get("deletionTimestamp")]
        replicas = {p["metadata"]["name"]: _pod_ready(p) for p in pods}
        wanted = int((obj.get("spec") or {}).get("replicas", 1))
        ready = bool(replicas) and all(replicas.values()) and len(replicas) >= wanted
        return WorkloadSpec(
            name=workload,
            env=env,
            memory_limit_bytes=int(k8s_quantity(limits["memory"])) if "memory" in limits else None,
            cpu_limit=k8s_quantity(limits["cpu"]) if "cpu" in limits else None,
            probes=probes,
            ready=ready,
            replicas=replicas,
            detail=f"{obj['kind']}/{obj['metadata']['name']}: {sum(replicas.values())}/{wanted} pods Ready",
        )

    def _env(self, container: dict[str, Any]) -> dict[str, str]:
        """Literal values and ConfigMap-backed values; Secret-backed ones show as `<secret NAME/KEY>`."""
        from kubernetes.client.exceptions import ApiException

        env: dict[str, str] = {}
        for item in container.get("envFrom") or []:
            if "configMapRef" in item:
                name = item["configMapRef"]["name"]
                try:
                    cm = self._get(f"/api/v1/namespaces/{self.namespace}/configmaps/{name}")
                except ApiException as exc:
                    if exc.status == 404 and item["configMapRef"].get("optional"):
                        continue
                    raise
                env.update({item.get("prefix", "") + k: str(v) for k, v in (cm.get("data") or {}).items()})
            elif "secretRef" in item:
                env[f"<secret {item['secretRef']['name']}>"] = "<secret>"
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
            elif "secretKeyRef" in (item.get("valueFrom") or {}):
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = f"<secret {ref['name']}/{ref['key']}>"
        return env


def pick_serving(pods: list[dict[str, Any]], workload: str, namespace: str) -> tuple[str, str]:
    """The (pod, container) that `serving_pod` picks from the workload's pods (the API's JSON). Raises ProbeError."""
    serving = [p for p in pods if _pod_ready(p) and not p["metadata"].get("deletionTimestamp")]
    if not serving:
        states = ", ".join(f"{p['metadata']['name']} ({(p.get('status') or {}).get('phase')}"
                           f"{', terminating' if p['metadata'].get('deletionTimestamp') else ''}"
                           f"{', ready' if _pod_ready(p) else ', not ready'})" for p in pods) or "none"
        raise ProbeError(f"workload {workload!r} has no Ready pod in namespace {namespace}: {states}")
    containers = [c["name"] for c in serving[0]["spec"]["containers"]]
    if workload in containers:
        container = workload
    elif len(containers) == 1:
        container = containers[0]
    else:
        raise ProbeError(f"pod {serving[0]['metadata']['name']} has containers {containers}, none named "
                         f"{workload!r}: which one is the workload's is not known")
    return serving[0]["metadata"]["name"], container


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
