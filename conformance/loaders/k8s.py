"""Load Kubernetes manifests (the kustomize output where there is a kustomization) into a typed model.

`load_manifests(DIR)` renders DIR with real kustomize (`kubectl kustomize`, conformance/loaders/kustomize.py)
when DIR holds a kustomization, else reads every *.yaml/*.yml below DIR; `Manifests.origins` says which file
each object came from. Every object must have a known apiVersion/kind (KNOWN_KINDS):
an unknown kind is an input error (exit 2), not something to skip silently.

The model resolves what the comparators need: each workload's pod labels, containers with their
environment resolved through ConfigMaps and Secrets (`$(VAR)` references kept and recorded), ports by
name, probes, resources and volumes.

Secrets that the manifests refer to but do not contain (created outside kustomize, e.g. by
scripts/k8s_secrets.sh, so that an apply never overwrites them) are passed as `provided_secrets`
({(namespace, name): keys}): a reference to one of those names and keys resolves ("provided by the
operator"); a reference to any other missing Secret or key is recorded in `problems`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from conformance.loaders.errors import InputError
from conformance.loaders.kustomize import KustomizeError, ObjectKey, is_kustomization, render
from conformance.loaders.kustomize import key as object_key

Resource = dict[str, Any]

KNOWN_KINDS: dict[str, set[str]] = {
    "v1": {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Service",
        "ServiceAccount",
        "PersistentVolumeClaim",
        "PersistentVolume",
        "Pod",
        "LimitRange",
        "ResourceQuota",
        "Endpoints",
    },
    "apps/v1": {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"},
    "batch/v1": {"Job", "CronJob"},
    "networking.k8s.io/v1": {"NetworkPolicy", "Ingress", "IngressClass"},
    "policy/v1": {"PodDisruptionBudget"},
    "autoscaling/v2": {"HorizontalPodAutoscaler"},
    "rbac.authorization.k8s.io/v1": {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"},
    "storage.k8s.io/v1": {"StorageClass"},
    "scheduling.k8s.io/v1": {"PriorityClass"},
    "apiextensions.k8s.io/v1": {"CustomResourceDefinition"},
    "monitoring.coreos.com/v1": {"ServiceMonitor", "PodMonitor", "PrometheusRule"},
}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}
_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@dataclass(frozen=True)
class EnvValue:
    """One container environment variable, resolved.

    `value` has `$(VAR)` references to literal/ConfigMap values expanded; references to Secret-backed
    variables stay as `$(VAR)`. `source` is `literal`, `configmap:NAME/KEY`, `secret:NAME/KEY`,
    `field:PATH` or `unresolved:...`; `secret_refs` names the Secret-backed variables it embeds."""

    name: str
    value: str
    source: str
    template: str = ""
    secret_refs: tuple[str, ...] = ()

    @property
    def from_secret(self) -> bool:
        return self.source.startswith("secret:")


@dataclass(frozen=True)
class ContainerPort:
    number: int
    name: str | None = None
    protocol: str = "TCP"


@dataclass
class Container:
    name: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    ports: list[ContainerPort]
    env: dict[str, EnvValue]
    requests: dict[str, str]
    limits: dict[str, str]
    probes: dict[str, Resource]  # readiness/liveness/startup -> probe spec
    security: Resource  # container securityContext merged over the pod's
    mounts: list[Resource]

    def port_number(self, port: int | str) -> int | None:
        if isinstance(port, int):
            return port
        if str(port).isdigit():
            return int(port)
        return next((p.number for p in self.ports if p.name == port), None)


@dataclass
class Workload:
    kind: str
    name: str
    namespace: str
    labels: dict[str, str]
    containers: list[Container]
    init_containers: list[Container]
    volumes: dict[str, Resource]
    claim_templates: dict[str, Resource]
    raw: Resource

    def container(self, name: str | None) -> Container | None:
        if name is None:
            return self.containers[0] if self.containers else None
        return next((c for c in self.containers if c.name == name), None)


@dataclass(frozen=True)
class ServicePort:
    port: int
    target: int | str
    name: str | None = None
    protocol: str = "TCP"


@dataclass
class K8sService:
    name: str
    namespace: str
    type: str
    selector: dict[str, str]
    ports: list[ServicePort]
    headless: bool


@dataclass
class Manifests:
    source: Path
    resources: list[Resource]
    workloads: dict[str, Workload] = field(default_factory=dict)
    services: dict[str, K8sService] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # references that do not resolve
    # Secrets that are not in the manifests but were declared as created outside them: (namespace, name) -> keys.
    provided_secrets: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    # Which workloads refer to each Secret (env, envFrom, volumes): (namespace, name) -> workload names.
    secret_users: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    # The file each object came from (kustomize's origin annotations): (kind, namespace, name) -> path.
    origins: dict[ObjectKey, str] = field(default_factory=dict)

    def origin(self, resource: Resource) -> str | None:
        return self.origins.get(object_key(resource))

    def of_kind(self, kind: str) -> list[Resource]:
        return [r for r in self.resources if r["kind"] == kind]

    def find(self, kind: str, name: str) -> Resource | None:
        return next((r for r in self.resources if r["kind"] == kind and r["metadata"]["name"] == name), None)

    def services_selecting(self, workload: Workload) -> list[K8sService]:
        return [
            s
            for s in self.services.values()
            if s.selector and s.namespace == workload.namespace and s.selector.items() <= workload.labels.items()
        ]


SecretKeys = Mapping[tuple[str, str], tuple[str, ...]]


def load_manifests(directory: Path, provided_secrets: SecretKeys | None = None) -> Manifests:
    """Read DIR (kustomize-rendered when it has a kustomization). Raises InputError.

    `provided_secrets`: Secrets created outside the manifests, {(namespace, name): keys} (see the module doc)."""
    directory = Path(directory)
    if not directory.exists():
        raise InputError(directory, "k8s directory does not exist")
    origins: dict[ObjectKey, str] = {}
    if directory.is_file():
        resources = _read_file(directory)
        origins = {object_key(res): str(directory) for res in resources}
    elif is_kustomization(directory):
        try:
            rendered = render(directory)
        except KustomizeError as exc:
            path, _, reason = str(exc).partition(": ")
            raise InputError(path, reason or str(exc)) from exc
        resources, origins = rendered.resources, rendered.origins
    else:
        files = sorted([*directory.rglob("*.yaml"), *directory.rglob("*.yml")])
        if not files:
            raise InputError(directory, "no kustomization.yaml and no *.yaml files")
        resources = []
        for file in files:
            for res in _read_file(file):
                resources.append(res)
                origins[object_key(res)] = str(file)
    for res in resources:
        _check_kind(res, directory)
    model = build_model(directory, resources, provided_secrets)
    model.origins = origins
    return model


def _read_file(path: Path) -> list[Resource]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise InputError(path, f"malformed YAML: {exc}") from exc
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "metadata" not in doc:
            raise InputError(path, "every document must be a Kubernetes object with kind and metadata")
    return docs


def _check_kind(res: Resource, where: Path) -> None:
    api = res.get("apiVersion")
    kind = res.get("kind")
    name = (res.get("metadata") or {}).get("name")
    if not name:
        raise InputError(where, f"{kind} without metadata.name")
    if api not in KNOWN_KINDS or kind not in KNOWN_KINDS[api]:
        raise InputError(where, f"unknown kind {kind!r} (apiVersion {api!r}) for object {name!r}")


def build_model(source: Path, resources: list[Resource], provided_secrets: SecretKeys | None = None) -> Manifests:
    model = Manifests(source=source, resources=resources)
    configmaps = {
        (r["metadata"].get("namespace") or "default", r["metadata"]["name"]): r for r in model.of_kind("ConfigMap")
    }
    secrets = {(r["metadata"].get("namespace") or "default", r["metadata"]["name"]): r for r in model.of_kind("Secret")}
    for (namespace, name), keys in (provided_secrets or {}).items():
        if (namespace, name) not in secrets:  # one in the manifests wins: it is what an apply would write
            model.provided_secrets[(namespace, name)] = tuple(keys)
            secrets[(namespace, name)] = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace},
                "stringData": {key: "" for key in keys},
            }
    for res in resources:
        if res["kind"] in WORKLOAD_KINDS:
            wl = _workload(res, configmaps, secrets, model.problems, model.secret_users)
            model.workloads[wl.name] = wl
        elif res["kind"] == "Service":
            svc = _service(res)
            model.services[svc.name] = svc
    return model


def _service(res: Resource) -> K8sService:
    spec = res.get("spec") or {}
    ports = [
        ServicePort(int(p["port"]), p.get("targetPort", p["port"]), p.get("name"), p.get("protocol", "TCP"))
        for p in spec.get("ports") or []
    ]
    return K8sService(
        name=res["metadata"]["name"],
        namespace=res["metadata"].get("namespace", "default"),
        type=spec.get("type", "ClusterIP"),
        selector=dict(spec.get("selector") or {}),
        ports=ports,
        headless=spec.get("clusterIP") == "None",
    )


def _workload(
    res: Resource,
    configmaps: dict[tuple[str, str], Resource],
    secrets: dict[tuple[str, str], Resource],
    problems: list[str],
    secret_users: dict[tuple[str, str], set[str]],
) -> Workload:
    namespace = res["metadata"].get("namespace", "default")
    template = (res.get("spec") or {}).get("template") or {}
    pod = template.get("spec") or {}
    pod_security = pod.get("securityContext") or {}
    where = f"{res['kind']}/{res['metadata']['name']}"

    def used(secret: str) -> None:
        secret_users.setdefault((namespace, secret), set()).add(res["metadata"]["name"])

    def container(spec: Resource) -> Container:
        env = _resolve_env(spec, namespace, configmaps, secrets, problems, where, used)
        resources = spec.get("resources") or {}
        return Container(
            name=spec["name"],
            image=str(spec.get("image", "")),
            command=tuple(map(str, spec.get("command") or ())),
            args=tuple(map(str, spec.get("args") or ())),
            ports=[
                ContainerPort(int(p["containerPort"]), p.get("name"), p.get("protocol", "TCP"))
                for p in spec.get("ports") or []
            ],
            env=env,
            requests={k: str(v) for k, v in (resources.get("requests") or {}).items()},
            limits={k: str(v) for k, v in (resources.get("limits") or {}).items()},
            probes={
                kind: spec[f"{kind}Probe"]
                for kind in ("readiness", "liveness", "startup")
                if spec.get(f"{kind}Probe")
            },
            security={**pod_security, **(spec.get("securityContext") or {})},
            mounts=list(spec.get("volumeMounts") or []),
        )

    claim_templates = {t["metadata"]["name"]: t for t in (res.get("spec") or {}).get("volumeClaimTemplates") or []}
    for volume in pod.get("volumes") or []:
        _check_secret_volume(volume, namespace, secrets, problems, where, used)
    return Workload(
        kind=res["kind"],
        name=res["metadata"]["name"],
        namespace=namespace,
        labels=dict((template.get("metadata") or {}).get("labels") or {}),
        containers=[container(c) for c in pod.get("containers") or []],
        init_containers=[container(c) for c in pod.get("initContainers") or []],
        volumes={v["name"]: v for v in pod.get("volumes") or []},
        claim_templates=claim_templates,
        raw=res,
    )


def _secret_data(secret: Resource) -> dict[str, str]:
    data: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            data[key] = base64.b64decode(str(value)).decode()
        except ValueError:
            data[key] = str(value)
    data.update({k: str(v) for k, v in (secret.get("stringData") or {}).items()})
    return data


def _check_secret_volume(
    volume: Resource,
    namespace: str,
    secrets: dict[tuple[str, str], Resource],
    problems: list[str],
    where: str,
    used: Callable[[str], None],
) -> None:
    ref = volume.get("secret")
    if not isinstance(ref, dict) or not ref.get("secretName"):
        return
    name = ref["secretName"]
    used(name)
    secret = secrets.get((namespace, name))
    if secret is None:
        if not ref.get("optional"):
            problems.append(f"{where}: volume {volume.get('name')} refers to missing Secret {name!r}")
        return
    keys = _secret_data(secret)
    for item in ref.get("items") or []:
        if item.get("key") not in keys and not ref.get("optional"):
            problems.append(
                f"{where}: volume {volume.get('name')} refers to missing Secret key {name}/{item.get('key')}"
            )


def _resolve_env(
    spec: Resource,
    namespace: str,
    configmaps: dict[tuple[str, str], Resource],
    secrets: dict[tuple[str, str], Resource],
    problems: list[str],
    where: str,
    used: Callable[[str], None],
) -> dict[str, EnvValue]:
    env: dict[str, EnvValue] = {}
    for item in spec.get("envFrom") or []:
        prefix = item.get("prefix", "")
        if "configMapRef" in item:
            ref = item["configMapRef"]
            cm = configmaps.get((namespace, ref["name"]))
            if cm is None:
                if not ref.get("optional"):
                    problems.append(f"{where}: envFrom ConfigMap {ref['name']!r} does not exist")
                continue
            for key, value in (cm.get("data") or {}).items():
                env[prefix + key] = EnvValue(prefix + key, str(value), f"configmap:{ref['name']}/{key}", str(value))
        elif "secretRef" in item:
            ref = item["secretRef"]
            used(ref["name"])
            secret = secrets.get((namespace, ref["name"]))
            if secret is None:
                if not ref.get("optional"):
                    problems.append(f"{where}: envFrom Secret {ref['name']!r} does not exist")
                continue
            for key in _secret_data(secret):
                name = prefix + key
                env[name] = EnvValue(name, f"$({name})", f"secret:{ref['name']}/{key}", f"$({name})", (name,))
    for item in spec.get("env") or []:
        name = item["name"]
        if "value" in item:
            template = str(item["value"])
            refs = _REF.findall(template)
            secret_refs = tuple(r for r in refs if r in env and (env[r].from_secret or env[r].secret_refs))

            def expand(match: re.Match[str]) -> str:
                ref = env.get(match.group(1))
                if ref is None or ref.from_secret or ref.secret_refs:
                    return match.group(0)
                return ref.value

            env[name] = EnvValue(name, _REF.sub(expand, template), "literal", template, secret_refs)
        elif "valueFrom" in item:
            vf = item["valueFrom"]
            if "secretKeyRef" in vf:
                ref = vf["secretKeyRef"]
                used(ref["name"])
                secret = secrets.get((namespace, ref["name"]))
                if secret is None or ref["key"] not in _secret_data(secret):
                    if not ref.get("optional"):
                        problems.append(
                            f"{where}: env {name} refers to missing Secret key {ref['name']}/{ref['key']}"
                        )
                env[name] = EnvValue(
                    name, f"$({name})", f"secret:{ref['name']}/{ref['key']}", f"$({name})", (name,)
                )
            elif "configMapKeyRef" in vf:
                ref = vf["configMapKeyRef"]
                cm = configmaps.get((namespace, ref["name"]))
                data = (cm or {}).get("data") or {}
                if ref["key"] not in data:
                    if not ref.get("optional"):
                        problems.append(
                            f"{where}: env {name} refers to missing ConfigMap key {ref['name']}/{ref['key']}"
                        )
                    continue
                value = str(data[ref["key"]])
                env[name] = EnvValue(name, value, f"configmap:{ref['name']}/{ref['key']}", value)
            elif "fieldRef" in vf:
                path = vf["fieldRef"].get("fieldPath", "")
                env[name] = EnvValue(name, f"<{path}>", f"field:{path}", f"<{path}>")
            else:
                env[name] = EnvValue(name, "", f"unresolved:{sorted(vf)}")
    return env
