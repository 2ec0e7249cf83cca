"""k8s/: every rendered object passes kubernetes-validate --strict for 1.30, and carries what the issue asks."""

from __future__ import annotations

import copy
import json
from typing import Any

import kubernetes_validate
import pytest

from conformance.expectations import OPERATOR_SECRETS, TLS_SECRET
from conformance.inventory import APPS, NAMESPACE, SERVICES, TLS_FRONT
from conformance.loaders.kustomize import render
from tests.deploy.repo import find

K8S_VERSION = "1.30.0"
Resource = dict[str, Any]
# CRDs have no schema in kubernetes-validate's offline set, and none can be vendored here (no network;
# a schema written from memory would check nothing real): checked structurally by
# test_servicemonitors_select_a_named_service_port instead (on k8s/overlays/monitoring, where they are).
CRD_SKIP_REASON = "CRD monitoring.coreos.com/v1 ServiceMonitor: no offline schema; checked structurally"


def _validate(resource: Resource) -> None:
    kubernetes_validate.validate(copy.deepcopy(resource), K8S_VERSION, strict=True)


def _builtin(resources: list[Resource]) -> list[Resource]:
    return [r for r in resources if not r["apiVersion"].startswith("monitoring.coreos.com/")]


@pytest.mark.parametrize("which", ["base_manifests", "kind_manifests", "monitoring_manifests"])
def test_every_manifest_passes_kubernetes_validate_strict(request: pytest.FixtureRequest, which: str) -> None:
    resources: list[Resource] = request.getfixturevalue(which)
    checked = _builtin(resources)
    skipped = [r for r in resources if r not in checked]
    assert {r["kind"] for r in skipped} <= {"ServiceMonitor"}, CRD_SKIP_REASON
    errors = []
    for res in checked:
        try:
            _validate(res)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{res['kind']}/{res['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)
    assert len(checked) >= 25


def test_kubernetes_validate_catches_a_broken_manifest(base_manifests: list[Resource]) -> None:
    broken = copy.deepcopy(find(base_manifests, "Deployment", "somabrain"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {"httpGet": {"path": "/readyz"}}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessprobe"):
        _validate(broken)
    wrong_type = copy.deepcopy(find(base_manifests, "Service", "somabrain"))
    wrong_type["spec"]["ports"][0]["port"] = "ninety-six"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(wrong_type)


def test_everything_lives_in_somabrain_prod(base_manifests: list[Resource]) -> None:
    for res in base_manifests:
        if res["kind"] != "Namespace":
            assert res["metadata"]["namespace"] == NAMESPACE, res["metadata"]["name"]


EXPECTED = [
    ("Namespace", NAMESPACE),
    ("ConfigMap", "somabrain-env"),
    ("ConfigMap", "somabrain-overrides"),
    ("ConfigMap", "somabrain-policy"),
    ("PersistentVolumeClaim", "somabrain-outbox-pvc"),
    ("Ingress", TLS_FRONT.ingress),
    ("NetworkPolicy", "default-deny-all"),
    # every service the inventory runs in the cluster: its Deployment or StatefulSet, and the Services in front
    *((s.in_cluster.kind, s.in_cluster.workload) for s in SERVICES if s.in_cluster),
    *(("Service", name) for s in SERVICES for name in s.k8s_services),
]


@pytest.mark.parametrize(("kind", "name"), EXPECTED)
def test_base_has_the_objects_the_guide_lists(base_manifests: list[Resource], kind: str, name: str) -> None:
    find(base_manifests, kind, name)


@pytest.mark.parametrize("which", ["base_manifests", "kind_manifests"])
def test_no_secret_and_no_servicemonitor_where_any_cluster_applies(request: pytest.FixtureRequest, which: str) -> None:
    """`kubectl apply -k k8s/` (and the kind overlay) must apply on a cluster without the Prometheus Operator, and
    must never overwrite the operator's Secrets with placeholders."""
    resources: list[Resource] = request.getfixturevalue(which)
    assert not [r["metadata"]["name"] for r in resources if r["kind"] == "Secret"]
    assert not [r for r in resources if r["apiVersion"].startswith("monitoring.coreos.com/")]


def test_monitoring_overlay_is_the_base_plus_the_servicemonitors(
    base_manifests: list[Resource], monitoring_manifests: list[Resource]
) -> None:
    added = [r for r in monitoring_manifests if r not in base_manifests]
    assert sorted((r["kind"], r["metadata"]["name"]) for r in added) == [
        ("ServiceMonitor", "somabrain-metrics"),
        ("ServiceMonitor", "somamemory-metrics"),
    ]
    assert [r for r in base_manifests if r not in monitoring_manifests] == []
    assert {r["metadata"]["namespace"] for r in added} == {NAMESPACE}


def test_every_secret_the_manifests_use_is_created_outside_them(base_manifests: list[Resource]) -> None:
    """Each Secret reference names a Secret (and key) that scripts/k8s_secrets.sh creates, or the TLS Secret."""
    refs: set[tuple[str, str | None]] = set()
    for res in base_manifests:
        if res["kind"] == "Ingress":
            refs |= {(t["secretName"], None) for t in res["spec"].get("tls", [])}
        if res["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = res["spec"]["template"]["spec"]
        for ctr in pod["containers"] + pod.get("initContainers", []):
            refs |= {(e["secretRef"]["name"], None) for e in ctr.get("envFrom", []) if "secretRef" in e}
            for env in ctr.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
        for vol in pod.get("volumes", []):
            if "secret" in vol:
                refs.add((vol["secret"]["secretName"], None))
                refs |= {(vol["secret"]["secretName"], i["key"]) for i in vol["secret"].get("items", [])}
    assert {name for name, _ in refs} == {*OPERATOR_SECRETS, TLS_SECRET}
    for name, key in refs:
        assert key is None or key in OPERATOR_SECRETS[name], f"{name}/{key} is not a key k8s_secrets.sh creates"


def test_somabrain_deployment_matches_the_guide(base_manifests: list[Resource]) -> None:
    dep = find(base_manifests, "Deployment", "somabrain")
    pod = dep["spec"]["template"]["spec"]
    (ctr,) = pod["containers"]
    assert ctr["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "1200m", "memory": "2Gi"},
    }
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert ctr["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "startupProbe" in ctr
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    sc = ctr["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"] for m in ctr["volumeMounts"]}
    env = find(base_manifests, "ConfigMap", "somabrain-env")["data"]
    assert {env["SOMABRAIN_JOURNAL_DIR"], env["PROMETHEUS_MULTIPROC_DIR"], "/tmp"} <= mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["outbox"]["persistentVolumeClaim"]["claimName"] == "somabrain-outbox-pvc"


def test_credentials_come_from_secrets_not_configmaps(base_manifests: list[Resource]) -> None:
    for cm in (r for r in base_manifests if r["kind"] == "ConfigMap"):
        for key, value in (cm.get("data") or {}).items():
            assert "PASSWORD" not in key.upper(), f"{cm['metadata']['name']}: {key}"
            assert "@" not in str(value) or "://" not in str(value), f"credentials in a URL: {key}"
    for app in (s.in_cluster for s in APPS if s.in_cluster):
        pod = find(base_manifests, app.kind, app.workload)["spec"]["template"]["spec"]
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        # The app: the runtime role (DML only); the superuser's Secret only in its db-init initContainer.
        assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "somabrain-postgres-app"
        assert "somabrain-postgres\"" not in json.dumps(pod["containers"])
        [init] = pod["initContainers"]
        assert init["name"] == "db-init" and init["args"][0] == "db-init"
        init_env = {e["name"]: e for e in init["env"]}
        assert init_env["POSTGRES_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "somabrain-postgres", "key": "POSTGRES_PASSWORD"}
        assert init_env["SOMABRAIN_POSTGRES_DSN"] == env["SOMABRAIN_POSTGRES_DSN"]
        assert init["securityContext"] == pod["containers"][0]["securityContext"]
    pg = find(base_manifests, "StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"][0]
    assert {"secretRef": {"name": "somabrain-postgres"}} in pg["envFrom"]


@pytest.mark.parametrize("name", [s.workload for s in APPS])
def test_the_overrides_configmap_cannot_make_an_app_leave_prod(base_manifests: list[Resource], name: str) -> None:
    """SOMABRAIN_ENV=prod is what turns auth and the policy on for good (brain/settings.py). It is pinned in the
    container's `env:`, which wins over every `envFrom` source, somabrain-overrides included."""
    ctr = find(base_manifests, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "SOMABRAIN_ENV", "value": "prod"} in ctr["env"]


def test_postgres_statefulset_and_ingress(base_manifests: list[Resource]) -> None:
    sts = find(base_manifests, "StatefulSet", "postgres")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert sts["spec"]["template"]["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"cpu": "200m", "memory": "256Mi"},
    }
    ing = find(base_manifests, "Ingress", "somabrain")
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"hosts": ["somabrain.internal"], "secretName": "somabrain-tls"}]
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "32m"


def test_opa_mounts_the_shared_policy(base_manifests: list[Resource], repo: Any) -> None:
    policy = find(base_manifests, "ConfigMap", "somabrain-policy")
    assert policy["data"]["somabrain.rego"] == (repo / "k8s" / "policy" / "somabrain.rego").read_text()
    opa = find(base_manifests, "Deployment", "sb-opa")["spec"]["template"]["spec"]
    assert opa["volumes"][0]["configMap"]["name"] == "somabrain-policy"
    assert "/policy/somabrain.rego" in opa["containers"][0]["args"]
    assert opa["containers"][0]["image"] == "openpolicyagent/opa:0.48.0"


def test_all_pods_run_non_root_without_privilege_escalation(kind_manifests: list[Resource]) -> None:
    for res in kind_manifests:
        if res["kind"] in ("Deployment", "StatefulSet"):
            pod = res["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, res["metadata"]["name"]
            for ctr in pod["containers"]:
                assert ctr["securityContext"]["allowPrivilegeEscalation"] is False
                assert ctr["securityContext"]["capabilities"]["drop"] == ["ALL"]
                assert ":latest" not in ctr["image"] and ":" in ctr["image"], ctr["image"]


def test_servicemonitors_select_a_named_service_port(monitoring_manifests: list[Resource]) -> None:
    """Structural check in place of a CRD schema (see CRD_SKIP_REASON)."""
    monitors = [r for r in monitoring_manifests if r["kind"] == "ServiceMonitor"]
    assert monitors
    services = [r for r in monitoring_manifests if r["kind"] == "Service"]
    for sm in monitors:
        assert sm["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(sm["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
        selector = sm["spec"]["selector"]["matchLabels"]
        selected = [s for s in services if selector.items() <= s["metadata"].get("labels", {}).items()]
        assert len(selected) == 1, f"{sm['metadata']['name']} selects {len(selected)} Services"
        port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            assert ep["port"] in port_names and ep["path"] == "/metrics"


def test_kind_overlay_differs_only_where_documented(
    base_manifests: list[Resource], kind_manifests: list[Resource]
) -> None:
    base_env = find(base_manifests, "ConfigMap", "somabrain-env")["data"]
    kind_env = find(kind_manifests, "ConfigMap", "somabrain-env")["data"]
    assert {k for k in base_env if base_env[k] != kind_env[k]} == {"SOMABRAIN_KAFKA_URL"}
    # The dev broker is the overlay's own, with one node: the API creates the audit topic there, one replica.
    assert {k: kind_env[k] for k in set(kind_env) - set(base_env)} == {
        "SOMABRAIN_KAFKA_CREATE_TOPIC": "1", "SOMABRAIN_KAFKA_TOPIC_REPLICATION_FACTOR": "1",
        "SOMABRAIN_KAFKA_TOPIC_MIN_INSYNC_REPLICAS": "1",
    }
    kafka_rule = find(kind_manifests, "NetworkPolicy", "somabrain-egress")["spec"]["egress"][4]
    assert kafka_rule["ports"] == [{"protocol": "TCP", "port": 9092}]
    assert kafka_rule["to"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "kafka"}
    ctr = find(kind_manifests, "Deployment", "somabrain")["spec"]["template"]["spec"]["containers"][0]
    assert ctr["imagePullPolicy"] == "IfNotPresent"
    assert ctr["securityContext"]["readOnlyRootFilesystem"] is False  # Tilt live_update
    assert find(kind_manifests, "Deployment", "kafka")["metadata"]["namespace"] == "kafka"


def test_no_plain_http_path_into_the_base(base_manifests: list[Resource], kind_manifests: list[Resource]) -> None:
    """The API is reached through the TLS Ingress only: no LoadBalancer or NodePort Service (either opens a NodePort
    on every node, which kube-proxy also answers on the node's 127.0.0.1, past the NetworkPolicies)."""
    for resources in (base_manifests, kind_manifests):
        assert not [r["metadata"]["name"] for r in resources
                    if r["kind"] == "Service" and r["spec"].get("type") in ("LoadBalancer", "NodePort")]


def test_the_public_loadbalancer_component_admits_only_its_source_ranges(k8s_copy: Any) -> None:
    overlay = k8s_copy / "overlays" / "public-lb-check"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: somabrain-prod\n"
        "resources: [../../base, ../../policy]\ncomponents: [../../components/public-loadbalancer]\n")
    resources = render(overlay).resources
    public = find(resources, "Service", "somabrain-public")
    assert public["spec"]["type"] == "LoadBalancer" and public["spec"]["externalTrafficPolicy"] == "Local"
    assert public["spec"]["ports"][0]["port"] == 9999 and public["spec"]["ports"][0]["targetPort"] == 9696
    policy = find(resources, "NetworkPolicy", "somabrain-public-ingress")
    sources = [peer["ipBlock"]["cidr"] for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    assert sources == public["spec"]["loadBalancerSourceRanges"]
    assert policy["spec"]["podSelector"]["matchLabels"] == public["spec"]["selector"]
