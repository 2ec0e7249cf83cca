"""The prod environment: a Kubernetes cluster, through the kubernetes Python client.

Workload `redis` is Deployment `sb-redis` in namespace somabrain-prod (see conformance.inventory); its pods
are found by the workload's own `spec.selector`, and only the current revision's count (the Deployment's newest
ReplicaSet, the StatefulSet's update revision). Probes run through the pod `exec` websocket
(`python3 -c <probe_script> <json>`) in a Ready, non-terminating pod:
- in the somabrain image's own containers (the API, SomaMemory), which carry python3;
- in any other pod (redis, postgres, OPA: their images have no python), from an ephemeral debug container of the
  somabrain image added to that pod (`sb-probe`, as `kubectl debug` adds one). It shares the pod's network
  namespace, so the NetworkPolicies see the pod's own identity. It stays until the pod is replaced, and later
  runs reuse it.

Reads: Services, Endpoints, NetworkPolicies, Ingress, Secrets, Deployments/StatefulSets/ReplicaSets, Pods, and
Namespaces when allowed (a namespace-scoped identity, k8s/base/rbac.yaml, cannot read them; see
check_reachable). Writes: pods/ephemeralcontainers, pods/exec; and, for the operator tools (targets.kube_api,
targets.kube_rollout): Deployments (a restart's template annotation, an image) and Secrets (their `data`).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO, Any

from conformance.expectations import PUBLIC_PORT, TLS_SECRET, TLS_SECRET_TYPE
from conformance.inventory import API, BY_KEY, NAMESPACE, TLS_FRONT
from conformance.loaders.units import k8s_quantity
from targets.base import (
    PROBE_SCRIPT,
    ExecResult,
    LocalEndpoint,
    Probe,
    ProbeError,
    ProbeResult,
    SecretStore,
    ServedTls,
    ServiceState,
    Serving,
    Target,
    TargetUnreachable,
    WorkloadSpec,
    decode_batch,
)

REQUEST_TIMEOUT = 10
PROBE_CONTAINER = "sb-probe"  # the ephemeral container's name (a suffix -N when an earlier one has exited)
EPHEMERAL_START_TIMEOUT = 90.0
CHUNK = 64 * 1024  # stdin goes to an exec in pieces of this size


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
        self._probe_image: str | None = None

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
        return self._request("GET", path)

    def _request(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> Any:
        """One API call, JSON in and out (None for an empty answer): every read here and every write of
        targets.kube_api goes through it. Raises ApiException (with the API's status and message)."""
        from kubernetes.client.exceptions import ApiException

        path, _, query = path.partition("?")
        params = [tuple(kv.split("=", 1)) for kv in query.split("&") if kv] if query else None
        headers = {"Accept": "application/json", **({"Content-Type": content_type} if content_type else {})}
        request = self.api.param_serialize(method, path, body=body, query_params=params, header_params=headers,
                                           auth_settings=["BearerToken"])
        response = self.api.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=response.data.decode("utf-8", "replace"),
                                             data=None)
        return json.loads(response.data) if response.data else None

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
            if exc.status != 403:
                raise TargetUnreachable(f"cannot read namespace {self.namespace!r}: {exc.reason}") from exc
            # A namespace-scoped identity (k8s/base/rbac.yaml) may not read Namespaces, which are cluster-scoped:
            # that it can list the namespace's Deployments is what the suite needs.
            try:
                self._get(f"/apis/apps/v1/namespaces/{self.namespace}/deployments?limit=1")
            except ApiException as inner:
                raise TargetUnreachable(
                    f"this identity may not read namespace {self.namespace!r} ({inner.status} {inner.reason}); "
                    "it needs the Role in k8s/base/rbac.yaml (kubectl auth can-i --list -n "
                    f"{self.namespace})") from inner

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
            # 404: no such namespace; 403: a namespace-scoped identity. Either way the one label every namespace
            # carries (set by the API server itself) is known.
            if exc.status in (403, 404):
                return {"kubernetes.io/metadata.name": name}
            raise
        return dict((doc.get("metadata") or {}).get("labels") or {})

    def workload_object(self, workload: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        service = BY_KEY.get(workload)
        name = service.workload if service else workload
        if name is None:
            return None
        for plural in ("deployments", "statefulsets"):
            try:
                return dict(self._get(f"/apis/apps/v1/namespaces/{self.namespace}/{plural}/{name}"))
            except ApiException as exc:
                if exc.status != 404:
                    raise
        return None

    def pods(self, workload: str, *, current_only: bool = True) -> list[dict[str, Any]]:
        """The workload's pods; by default only those of its current revision (after a rollout, the old
        ReplicaSet's pods may still be Ready for a while, running the old image)."""
        obj = self.workload_object(workload)
        if obj is None:
            return []
        selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        query = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        doc = self._get(f"/api/v1/namespaces/{self.namespace}/pods?labelSelector={query}")
        pods = list(doc.get("items") or [])
        if not current_only:
            return pods
        label, revision = self._current_revision(obj, query)
        if revision is None:
            return pods
        return [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(label) == revision]

    def _current_revision(self, obj: dict[str, Any], selector: str) -> tuple[str, str | None]:
        """(pod label, value) that marks the workload's current pods: a Deployment's newest ReplicaSet's
        pod-template-hash, a StatefulSet's status.updateRevision. None when it cannot be told (no ReplicaSet yet)."""
        if obj.get("kind") == "StatefulSet":
            return "controller-revision-hash", (obj.get("status") or {}).get("updateRevision")
        revision = ((obj.get("metadata") or {}).get("annotations") or {}).get("deployment.kubernetes.io/revision")
        uid = (obj.get("metadata") or {}).get("uid")
        doc = self._get(f"/apis/apps/v1/namespaces/{self.namespace}/replicasets?labelSelector={selector}")
        for rs in doc.get("items") or []:
            meta = rs.get("metadata") or {}
            owned = any(o.get("uid") == uid for o in meta.get("ownerReferences") or [])
            if owned and (meta.get("annotations") or {}).get("deployment.kubernetes.io/revision") == revision:
                return "pod-template-hash", (meta.get("labels") or {}).get("pod-template-hash")
        return "pod-template-hash", None

    def workload_names(self) -> list[str]:
        return [s.key for s in BY_KEY.values() if s.workload and self.workload_object(s.key) is not None]

    def local_endpoint(self, workload: str, port: int) -> LocalEndpoint:
        """The API on 127.0.0.1:9696 (scripts/port_forward.sh), the TLS front (the Ingress) on 127.0.0.1:9999 (the
        kind ingress controller's host port); nothing else of the cluster is reachable from this host."""
        if workload == API.key:
            return LocalEndpoint(f"127.0.0.1:{API.port}")
        if workload == TLS_FRONT.key:
            return LocalEndpoint(f"127.0.0.1:{PUBLIC_PORT}")
        return LocalEndpoint(None, f"{workload}:{port} is reachable only inside the cluster")

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
        """(pod, container) to run a probe in: a Ready pod of the current revision that is not terminating, and
        the workload's own container, chosen by name (the workload's key: `redis` in Deployment sb-redis)."""
        return pick_serving(self.pods(workload), workload, self.namespace)

    def probe_image(self) -> str:
        """The image the probes run with: the API's (python3 and the probe's stdlib are in it)."""
        if self._probe_image is None:
            obj = self.workload_object("somabrain")
            containers = ((((obj or {}).get("spec") or {}).get("template") or {}).get("spec") or {}).get(
                "containers") or []
            images = [c.get("image") for c in containers if c.get("name") == "somabrain"] or \
                [c.get("image") for c in containers[:1]]
            if not images or not images[0]:
                raise ProbeError("the probes run with the somabrain image, and Deployment somabrain, which names "
                                 f"it, is not in namespace {self.namespace}")
            self._probe_image = str(images[0])
        return self._probe_image

    def run_probes(self, workload: str, probes: Sequence[Probe]) -> list[ProbeResult]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError
        from websocket import WebSocketException

        if not probes:
            return []
        pod, container = self.serving_pod(workload)
        payload = json.dumps([p.payload() for p in probes])
        try:
            container = self._probe_container(workload, pod, container)
            with self.exec_core() as core:
                return self._exec_probes(core, pod, container, probes, payload)
        except (ApiException, HTTPError, WebSocketException, OSError) as exc:
            # What a real API says when the exec cannot start (403 without pods/exec, a container that is gone, a
            # closed websocket) is the probe's failure, with the API's words: never an uncaught exception.
            raise ProbeError(f"pod {pod}: cannot run the probe: {api_message(exc)}") from exc

    def _probe_container(self, workload: str, pod: str, container: str) -> str:
        """The container of `pod` to exec the probe in: the workload's own when it is of the somabrain image,
        otherwise a running ephemeral `sb-probe` container of that image, added now if the pod has none."""
        doc = self._get(f"/api/v1/namespaces/{self.namespace}/pods/{pod}")
        spec = doc.get("spec") or {}
        own: dict[str, Any] = next((c for c in spec.get("containers") or [] if c.get("name") == container), {})
        image = self.probe_image()
        if own.get("image") == image:
            return container
        statuses = {s.get("name"): s for s in (doc.get("status") or {}).get("ephemeralContainerStatuses") or []}
        existing = [c["name"] for c in spec.get("ephemeralContainers") or []
                    if str(c.get("name", "")).startswith(PROBE_CONTAINER) and c.get("image") == image]
        for name in existing:
            state = (statuses.get(name) or {}).get("state") or {}
            if "running" in state:
                return str(name)
            if "waiting" in state:
                return self._await_ephemeral(pod, name)
        # Ephemeral containers cannot be removed or restarted: when the last one has exited, add the next.
        names = {c.get("name") for c in spec.get("ephemeralContainers") or []}
        name, number = PROBE_CONTAINER, 1
        while name in names:
            number += 1
            name = f"{PROBE_CONTAINER}-{number}"
        debug = {
            "name": name, "image": image, "imagePullPolicy": "IfNotPresent",
            # Idle until the pod goes; the probes are exec'd into it. Nothing is written, nothing is privileged.
            "command": ["python3", "-c", "import signal; signal.pause()"],
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}},
        }
        self._request("PATCH", f"/api/v1/namespaces/{self.namespace}/pods/{pod}/ephemeralcontainers",
                      {"spec": {"ephemeralContainers": [debug]}}, "application/strategic-merge-patch+json")
        return self._await_ephemeral(pod, name)

    def _await_ephemeral(self, pod: str, name: str) -> str:
        deadline = time.monotonic() + EPHEMERAL_START_TIMEOUT
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            doc = self._get(f"/api/v1/namespaces/{self.namespace}/pods/{pod}")
            status: dict[str, Any] = next((s for s in (doc.get("status") or {}).get("ephemeralContainerStatuses") or []
                           if s.get("name") == name), {})
            state = status.get("state") or {}
            if "running" in state:
                return name
            if "terminated" in state:
                break
            time.sleep(0.5)
        raise ProbeError(f"pod {pod}: the ephemeral probe container {name} (image {self.probe_image()}) did not "
                         f"start within {EPHEMERAL_START_TIMEOUT:.0f} s: {json.dumps(state)[:300]}")

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
            try:
                code = exit_code(ws)
            except ProbeError as exc:
                raise ProbeError(f"pod {pod} ({container}): {exc}") from exc
        finally:
            ws.close()
        if code != 0:
            raise ProbeError(f"pod {pod} ({container}): the probe exited {code}: "
                             f"{(stderr or stdout).strip()[-400:]}")
        return decode_batch(probes, stdout, f"pod {pod}")

    def exec(self, workload: str, argv: Sequence[str], stdin: bytes | None = None, sink: IO[bytes] | None = None,
             timeout: float = 600.0) -> ExecResult:
        """Through the pod `exec` websocket, stdin on channel 0; in the workload's own container of a serving pod."""
        pod, container = self.serving_pod(workload)
        with self.exec_core() as core:
            return _stream_exec(core, self.namespace, pod, container, argv, stdin, sink, timeout)

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

    # -- serving state -------------------------------------------------------------------------------
    def serving(self, services: Sequence[Any]) -> Serving:
        from kubernetes.client.exceptions import ApiException

        found: list[ServiceState] = []
        for svc in services:
            name = svc.k8s_service
            if name is None:
                continue
            try:
                doc = self.endpoints(name)
            except ApiException as exc:
                found.append(ServiceState(svc.key, "FAIL", f"Service {name}: no Endpoints object ({exc.reason})",
                                          f"kubectl get svc,endpoints {name} -n {self.namespace}"))
                continue
            ready = tuple(str(a.get("ip")) for s in doc.get("subsets") or [] for a in s.get("addresses") or [])
            unready = sum(len(s.get("notReadyAddresses") or []) for s in doc.get("subsets") or [])
            if ready:
                found.append(ServiceState(svc.key, "OK", f"Service {name} has {len(ready)} ready endpoint(s)",
                                          label=f"{name}({len(ready)})", addresses=ready))
            else:
                why = f"{unready} not-ready pod(s)" if unready else "no pod matches its selector"
                found.append(ServiceState(svc.key, "FAIL", f"Service {name} has no ready endpoints: {why}",
                                          f"{self.status_command(svc.key)}\n"
                                          f"kubectl describe pods -n {self.namespace} -l app={svc.workload}"))
        good = [s.label for s in found if s.level == "OK"]
        return Serving("endpoints", tuple(found), f"every Service has ready endpoints: {', '.join(good)}")

    def bootstrap(self, steps: Sequence[Any]) -> list[ServiceState]:
        """Each step's initContainer in the current pods of the workloads that declare it: OK once it finished (exit
        0) in every one of them; otherwise a state per pod where it has not (failing, restarting, still running)."""
        from kubernetes.client.exceptions import ApiException

        found: list[ServiceState] = []
        for step in steps:
            try:
                listed = [(app, pod) for app in step.of for pod in self.pods(app)]
            except ApiException as exc:  # e.g. 403 without `list pods`: say so, as a line, not a traceback
                found.append(ServiceState(step.key, "WARN", f"cannot list the pods of {' and '.join(step.of)}: "
                                          f"{api_message(exc)}", f"kubectl auth can-i list pods -n {self.namespace}"))
                continue
            pods = [(app, pod) for app, pod in listed
                    if any(c.get("name") == step.init_container
                           for c in (pod.get("spec") or {}).get("initContainers") or [])]
            waiting: list[ServiceState] = []
            for app, pod in pods:
                name = str((pod.get("metadata") or {}).get("name"))
                statuses = (pod.get("status") or {}).get("initContainerStatuses") or []
                status = next((s for s in statuses if s.get("name") == step.init_container), None)
                problem = init_container_problem(status)
                if problem is None:
                    continue
                level, what = problem
                logs = f"kubectl logs {name} -c {step.init_container} -n {self.namespace}"
                restarts = int((status or {}).get("restartCount") or 0)
                waiting.append(ServiceState(step.key, level, f"initContainer {step.init_container} of pod {name} "
                                            f"({app}): {what}; the pod does not start until it exits 0",
                                            f"{logs}{' --previous' if restarts else ''}\n"
                                            f"kubectl describe pod {name} -n {self.namespace}"))
            apps = " and ".join(step.of)
            if waiting:
                found.extend(waiting)
            elif pods:
                found.append(ServiceState(step.key, "OK", f"initContainer {step.init_container} exited 0 in "
                                          f"{len(pods)} pod(s) of {apps}", label=step.key))
            else:
                found.append(ServiceState(step.key, "WARN", f"no current pod of {apps} runs initContainer "
                                          f"{step.init_container} (k8s/base declares it in both)",
                                          f"kubectl get pods -n {self.namespace} -o wide"))
        return found

    def served_tls(self) -> ServedTls:
        """Secret somabrain-tls of the namespace, which the Ingress names."""
        where, show = f"Secret {TLS_SECRET}", f"kubectl get secret {TLS_SECRET} -n {self.namespace} -o yaml"
        secret = self.secret(TLS_SECRET)
        if secret is None:
            return ServedTls(where, None, None, show, f"Secret {TLS_SECRET} does not exist in {self.namespace}")
        data = secret.get("data") or {}
        try:
            cert = base64.b64decode(data["tls.crt"]) if "tls.crt" in data else None
            key = base64.b64decode(data["tls.key"]) if "tls.key" in data else None
        except (binascii.Error, ValueError):
            return ServedTls(where, None, None, show, f"Secret {TLS_SECRET}: tls.crt or tls.key is not base64",
                             secret)
        if secret.get("type") != TLS_SECRET_TYPE:
            problem = f"Secret {TLS_SECRET} has type {secret.get('type')!r}, not {TLS_SECRET_TYPE}"
        elif cert is None or key is None:
            problem = f"Secret {TLS_SECRET} lacks tls.crt/tls.key (has {sorted(data)})"
        else:
            problem = ""
        return ServedTls(where, cert, key, show, problem, secret)

    # -- configuration -------------------------------------------------------------------------------
    def secret_store(self, name: str) -> SecretStore:
        return KubeSecret(self, name)

    def roll(self, workloads: Sequence[str], timeout: float) -> list[str]:
        """`kubectl rollout restart` of each workload's Deployment, then `rollout status` until no old pod serves
        (targets.kube_rollout)."""
        from targets.kube_api import KubeError
        from targets.kube_rollout import restart

        names = tuple(self._workload_ref(w).partition("/")[2] for w in workloads)
        try:
            return restart(self, names, timeout)
        except KubeError as exc:
            return [str(exc)]

    def roll_command(self, workloads: Sequence[str]) -> str:
        return f"kubectl rollout restart {' '.join(self._workload_ref(w) for w in workloads)} -n {self.namespace}"

    # -- the next commands ---------------------------------------------------------------------------
    def _workload_ref(self, key: str) -> str:
        """`deployment/sb-redis`, `statefulset/postgres`: the workload of a service prod runs in the cluster."""
        svc = BY_KEY.get(key)
        prod = svc.in_cluster if svc else None
        return prod.ref if prod else f"deployment/{key}"

    def logs_command(self, key: str) -> str:
        return f"kubectl logs {self._workload_ref(key)} -n {self.namespace} --tail 50"

    def restart_command(self, key: str) -> str:
        return f"kubectl rollout restart {self._workload_ref(key)} -n {self.namespace}"

    def status_command(self, key: str | None = None) -> str:
        service = BY_KEY[key].k8s_service if key and key in BY_KEY else None
        return f"kubectl get endpoints {service} -n {self.namespace}" if service else \
            f"kubectl get endpoints -n {self.namespace}"

    def exec_command(self, workload: str, argv: str) -> str:
        return f"kubectl exec -it {self._workload_ref(workload)} -n {self.namespace} -- {argv}"


class KubeSecret(SecretStore):
    """A Secret of the namespace, read with one GET, written with a JSON merge PATCH of `data`, unconditional: the
    keys written do not depend on the rest of the Secret, so another key changed meanwhile is kept by the
    server-side merge and is no reason to fail (a 409 is retried, targets.kube_api.retry_conflicts)."""

    def __init__(self, target: KubeTarget, name: str) -> None:
        self.target, self.name = target, name
        self.where = f"Secret {name}"

    def key_name(self, key: str) -> str:
        return key

    def read(self) -> dict[str, str]:
        from targets.kube_api import get, secret_path

        data = get(self.target, secret_path(self.target, self.name)).get("data") or {}
        return {key: base64.b64decode(value).decode() for key, value in data.items()}

    def write(self, changes: Mapping[str, str | None]) -> None:
        from targets.kube_api import merge_patch, retry_conflicts, secret_path

        data = {key: None if value is None else base64.b64encode(value.encode()).decode()
                for key, value in changes.items()}
        retry_conflicts(lambda: merge_patch(self.target, secret_path(self.target, self.name), {"data": data}),
                        f"update of Secret {self.name} keys {', '.join(changes)}")


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


def _stream_exec(core: Any, namespace: str, pod: str, container: str, argv: Sequence[str], stdin: bytes | None,
                 sink: IO[bytes] | None, timeout: float) -> ExecResult:
    from kubernetes.stream import stream

    ws = stream(core.connect_get_namespaced_pod_exec, pod, namespace,
                command=list(argv), container=container, stderr=True, stdin=stdin is not None, stdout=True,
                tty=False, _preload_content=False, binary=True)
    out: list[bytes] = []
    err: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        if stdin is not None:
            for start in range(0, len(stdin), CHUNK):
                ws.write_stdin(stdin[start:start + CHUNK])
            ws.close_channel(0)  # v5 only; a no-op on v4, where the command ends its input itself
        while ws.is_open():
            if time.monotonic() > deadline:
                raise ProbeError(f"pod {pod}: {argv[0]} did not finish within {timeout:.0f} s")
            ws.update(timeout=1)
            _drain(ws, out, err, sink)
        _drain(ws, out, err, sink)
        try:
            code = exit_code(ws)
        except ProbeError as exc:
            raise ProbeError(f"pod {pod} ({container}): {argv[0]}: {exc}") from exc
    finally:
        ws.close()
    return ExecResult(int(code or 0), b"".join(out), b"".join(err).decode("utf-8", "replace"), f"pod {pod}")


def _drain(ws: Any, out: list[bytes], err: list[bytes], sink: IO[bytes] | None) -> None:
    data = ws.read_stdout(timeout=0)
    if data:
        if sink is not None:
            sink.write(data)
        else:
            out.append(data)
    error = ws.read_stderr(timeout=0)
    if error:
        err.append(error)


def exit_code(ws: Any) -> int:
    """The exit code of a finished exec, from its error channel (a metav1.Status). The client's own `returncode`
    raises ValueError when that Status is a failure without an exit code (the container has exited: "unable to
    upgrade connection: container not found"); here that is a ProbeError with the API's words."""
    raw = ws.read_channel(3) or ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    try:
        doc = json.loads(text) if text.strip() else {}
    except ValueError:
        doc = {"message": text}
    if doc.get("status") == "Success":
        return 0
    for cause in (doc.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode" and str(cause.get("message", "")).isdigit():
            return int(cause["message"])
    if doc:
        raise ProbeError(f"the exec failed: {str(doc.get('message') or text).strip()[:300]}")
    raise ProbeError("the exec ended without an exit status (the connection closed early)")


def api_message(exc: BaseException) -> str:
    """`STATUS message` from an ApiException's JSON body (the API's Status document), else the whole exception text
    on one line. The probes' errors and targets.kube_api's KubeError both say it so."""
    body = getattr(exc, "body", None)
    if body:
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
        if message:
            return f"{getattr(exc, 'status', '')} {message}".strip()
    # A websocket handshake refused by the API arrives as ApiException "(0) Reason: Handshake status 500 ...
    # container not found": the reason is on the later lines, so all of it, on one line.
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def init_container_problem(status: dict[str, Any] | None) -> tuple[str, str] | None:
    """What keeps an initContainer from having finished, as (level, words), from its status; None when it exited 0."""
    if status is None:
        return "WARN", "no status yet (the pod is being scheduled)"
    state = status.get("state") or {}
    last = (status.get("lastState") or {}).get("terminated") or {}
    if "terminated" in state:
        ended = state["terminated"] or {}
        code = ended.get("exitCode")
        if code == 0:
            return None
        return "FAIL", f"exited {code} ({ended.get('reason') or 'Error'})"
    if "waiting" in state:
        reason = (state["waiting"] or {}).get("reason") or "waiting"
        if last:
            return "FAIL", f"{reason} after it exited {last.get('exitCode')} ({last.get('reason') or 'Error'}), " \
                           f"restarted {status.get('restartCount', 0)} time(s)"
        return ("WARN" if reason in ("PodInitializing", "ContainerCreating") else "FAIL"), reason
    return "WARN", "still running"
