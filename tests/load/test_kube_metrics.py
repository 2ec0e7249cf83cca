"""load/samplers/kube_metrics.py where no cluster is needed: Kubernetes quantities, and a missing kubeconfig.

No fake: sampling itself (usage against the pod spec limits, a reading once per timestamp, OOM kills and restarts
as events, pods without limits, no source of usage, the sampler thread) is tested on the real cluster,
tests/cluster/test_kube_sampler_live.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from load.quantities import parse_quantity
from load.samplers.kube_metrics import KubeSampler, KubeUnavailable


@pytest.mark.parametrize(("text", "value"), [
    ("1200m", 1.2), ("350000000n", 0.35), ("2Gi", 2 * 2**30), ("524288Ki", 512 * 2**20), ("1", 1.0),
    ("250u", 0.00025), ("1e3", 1000.0), ("64M", 64e6)])
def test_quantities(text: str, value: float) -> None:
    assert parse_quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "12x", "Gi", "1.2.3Mi"])
def test_bad_quantity(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)


def test_no_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KubeUnavailable, match="needs a Kubernetes cluster"):
        KubeSampler("somabrain-prod", kubeconfig=str(tmp_path / "absent")).check()
