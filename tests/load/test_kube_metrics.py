"""load/samplers/kube_metrics.py where no cluster is needed: a missing kubeconfig or context, a cluster that does
not answer, the KubeTarget it reads through (its quantities are conformance.loaders.units.k8s_quantity, tested in
tests/conformance/test_loaders.py).

No fake: sampling itself (usage against the pod spec limits, a reading once per timestamp, OOM kills and restarts
as events, pods without limits, no source of usage, the sampler thread) is tested on the real cluster,
tests/cluster/test_kube_sampler_live.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from load.samplers.kube_metrics import PODS_PATH, KubeSampler, KubeUnavailable
from targets.kube import KubeTarget

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: closed, cluster: {server: "http://127.0.0.1:1"}}]
users: [{name: nobody, user: {token: none}}]
contexts: [{name: closed, context: {cluster: closed, user: nobody}}]
current-context: closed
"""


def kubeconfig(tmp_path: Path) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    return str(path)


def test_no_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KubeUnavailable, match="needs a Kubernetes cluster"):
        KubeSampler("somabrain-prod", kubeconfig=str(tmp_path / "absent")).check()


def test_an_unknown_context_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KubeUnavailable, match=r"^--env prod: .*cannot load context 'absent' .*--kube-context"):
        KubeSampler("somabrain-prod", context="absent", kubeconfig=kubeconfig(tmp_path)).check()


def test_a_cluster_that_does_not_answer_names_the_call(tmp_path: Path) -> None:
    """Port 1 on loopback refuses: the error names the GET and the client's reason, on one line."""
    with pytest.raises(KubeUnavailable) as caught:
        KubeSampler("somabrain-prod", kubeconfig=kubeconfig(tmp_path)).check()
    message = str(caught.value)
    assert message.startswith(f"GET {PODS_PATH.format(ns='somabrain-prod')}: ") and "refused" in message
    assert "\n" not in message


def test_it_reads_through_the_target_it_is_given(tmp_path: Path) -> None:
    target = KubeTarget(namespace="scratch", kubeconfig=kubeconfig(tmp_path))
    sampler = KubeSampler("scratch", target=target)
    assert sampler.target is target
    with pytest.raises(ValueError, match="namespace 'scratch'"):
        KubeSampler("somabrain-prod", target=target)


def test_by_default_it_makes_a_target_of_its_namespace_context_and_kubeconfig(tmp_path: Path) -> None:
    sampler = KubeSampler("scratch", context="closed", kubeconfig=kubeconfig(tmp_path))
    assert (sampler.target.namespace, sampler.target.context, sampler.target.kubeconfig) == (
        "scratch", "closed", kubeconfig(tmp_path))
