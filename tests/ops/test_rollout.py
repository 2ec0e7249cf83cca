"""`somabrain rollout` usage errors and an unreachable cluster: exit 3, no cluster and no fake needed.

On the real cluster: a new image rolls out and an unpullable one is rolled back on somabrain-prod
(tests/cluster/test_tilt_live.py); a stub predictor fails the readiness checks and `--only somabrain` rolls back
somabrain alone, in a scratch namespace (tests/cluster/test_rollout_live.py).
"""

from __future__ import annotations

import pytest

from ops import rollout


def test_usage_errors(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        rollout.main([])
    assert exc.value.code == 3
    assert rollout.main(["bad image", "--kubeconfig", "/nonexistent"]) == 3
    assert rollout.main(["x:1", "--kubeconfig", "/nonexistent/kubeconfig"]) == 3
    assert "Kubernetes" in capsys.readouterr().err
