"""load/samplers/kube_metrics.py where no cluster is needed: a missing kubeconfig (its quantities are
conformance.loaders.units.k8s_quantity, tested in tests/conformance/test_loaders.py).

No fake: sampling itself (usage against the pod spec limits, a reading once per timestamp, OOM kills and restarts
as events, pods without limits, no source of usage, the sampler thread) is tested on the real cluster,
tests/cluster/test_kube_sampler_live.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from load.samplers.kube_metrics import KubeSampler, KubeUnavailable


def test_no_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KubeUnavailable, match="needs a Kubernetes cluster"):
        KubeSampler("somabrain-prod", kubeconfig=str(tmp_path / "absent")).check()
