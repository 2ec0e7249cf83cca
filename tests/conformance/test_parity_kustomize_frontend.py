"""The gate's Kubernetes front end is real kustomize: each kustomize feature, used to introduce ONE drift in the
production entry point (k8s/kustomization.yaml of a private copy of the tree), fails the gate with the right
dimension and subject. Several of these were invisible to, or refused by, the hand-written renderer this
replaced: `$patch: delete` was ignored ("parity holds"), `images:` was refused (exit 2), and a patch adding a
Service port replaced the existing one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conformance.gate import Mutation, run_gate

Kustomization = dict[str, Any]


def entry_point(change: Callable[[Kustomization], None]) -> Callable[[Path], None]:
    """Edit k8s/kustomization.yaml, the production entry point the gate renders, in the copied tree."""

    def apply(tree: Path) -> None:
        path = tree / "k8s" / "kustomization.yaml"
        spec = yaml.safe_load(path.read_text())
        change(spec)
        path.write_text(yaml.safe_dump(spec, sort_keys=False))

    return apply


def patch(text: str, target: dict[str, str] | None = None) -> Callable[[Path], None]:
    entry: dict[str, Any] = {"patch": text, **({"target": target} if target else {})}
    return entry_point(lambda spec: spec.setdefault("patches", []).append(entry))


def _component(tree: Path) -> None:
    """A Component (k8s/components/…) included by the entry point, cutting the API's memory limit."""
    directory = tree / "k8s" / "components" / "small-api"
    directory.mkdir(parents=True)
    (directory / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
        "patches": [{"target": {"kind": "Deployment", "name": "somabrain"}, "patch": (
            "- op: replace\n  path: /spec/template/spec/containers/0/resources/limits/memory\n  value: 256Mi\n")}],
    }))
    entry_point(lambda spec: spec.setdefault("components", []).append("components/small-api"))(tree)


MUTATIONS = [
    Mutation("strategic-merge patch: $patch: delete of the DNS egress policy", "connectivity",
             "somabrain->dns:53/UDP",
             patch("$patch: delete\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
                   "metadata: {name: allow-dns-egress}\n")),
    Mutation("strategic-merge patch: the Redis image", "image", "sb_redis",
             patch("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: sb-redis}\nspec:\n  template:\n"
                   "    spec:\n      containers:\n      - name: redis\n        image: redis:7.4-alpine\n")),
    Mutation("strategic-merge patch: a Service port added beside the existing one", "ports",
             "sb_redis/service-ports",
             patch("apiVersion: v1\nkind: Service\nmetadata: {name: sb-redis}\nspec:\n  ports:\n"
                   "  - {name: extra, port: 16379, targetPort: 6379}\n")),
    Mutation("JSON 6902 patch: the Redis container port", "ports", "sb_redis/container-ports",
             patch("- op: replace\n  path: /spec/template/spec/containers/0/ports/0/containerPort\n  value: 6380\n",
                   {"kind": "Deployment", "name": "sb-redis"})),
    Mutation("images: transformer: a new Redis tag", "image", "sb_redis",
             entry_point(lambda spec: spec.setdefault("images", []).append({"name": "redis",
                                                                             "newTag": "7.4-alpine"}))),
    Mutation("components: the API's memory limit cut", "resources", "somabrain/memory", _component),
    Mutation("configMapGenerator (behavior: merge): the predictor", "env", "somabrain/SOMABRAIN_PREDICTOR_PROVIDER",
             entry_point(lambda spec: spec.setdefault("configMapGenerator", []).append(
                 {"name": "somabrain-env", "behavior": "merge", "literals": ["SOMABRAIN_PREDICTOR_PROVIDER=stub"]}))),
    Mutation("secretGenerator: a Postgres Secret shipped in the manifests", "mapping", "k8s:secret/somabrain-postgres",
             entry_point(lambda spec: spec.setdefault("secretGenerator", []).append(
                 {"name": "somabrain-postgres", "options": {"disableNameSuffixHash": True},
                  "literals": ["POSTGRES_USER=somabrain", "POSTGRES_PASSWORD=", "POSTGRES_DB=somabrain"]}))),
    Mutation("namespace transformer: another namespace", "env", "somabrain/SOMABRAIN_REDIS_URL",
             entry_point(lambda spec: spec.update(namespace="somabrain-staging"))),
]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m.id for m in MUTATIONS])
def test_a_kustomize_feature_that_introduces_drift_fails_the_gate(tree: Path, capsys: pytest.CaptureFixture[str],
                                                                  mutation: Mutation) -> None:
    mutation.apply(tree)
    result = run_gate(tree, capsys)
    assert result.code == 1, f"gate passed a tree with: {mutation.id} ({result.stderr[-500:]})"
    assert (mutation.dimension, mutation.subject) in result.drifts(), result.drifts()


def test_the_added_service_port_is_added_not_substituted(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What the old renderer got wrong: both ports are there, the original first."""
    patch("apiVersion: v1\nkind: Service\nmetadata: {name: sb-redis}\nspec:\n  ports:\n"
          "  - {name: extra, port: 16379, targetPort: 6379}\n")(tree)
    finding = run_gate(tree, capsys).by_subject("ports", "sb_redis/service-ports")
    assert finding["prod"] == "sb-redis:6379, 16379", finding


def test_a_generator_with_a_name_hash_is_followed_by_the_references(tree: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """kustomize renames a generated ConfigMap (name-hash suffix) and rewrites every reference to it; the gate
    reads the rendered result, so the env the workloads get from it is still compared (here: it changed)."""
    def replace_env(spec: Kustomization) -> None:
        spec.setdefault("configMapGenerator", []).append(
            {"name": "somabrain-env", "behavior": "merge", "literals": ["SOMABRAIN_PREDICTOR_PROVIDER=stub"],
             "options": {"disableNameSuffixHash": False}})

    entry_point(replace_env)(tree)
    result = run_gate(tree, capsys)
    assert ("env", "somabrain/SOMABRAIN_PREDICTOR_PROVIDER") in result.drifts()
    assert result.by_subject("env", "somabrain/SOMABRAIN_PREDICTOR_PROVIDER")["prod"] == "stub"


def test_an_unrenderable_patch_is_exit_2_in_kustomizes_words(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    patch("- op: replace\n  path: /spec/nope/0\n  value: 1\n", {"kind": "Deployment", "name": "sb-redis"})(tree)
    result = run_gate(tree, capsys)
    assert result.code == 2
    assert "cannot read input" in result.stderr and "/spec/nope/0" in result.stderr
    assert "Traceback" not in result.stderr
