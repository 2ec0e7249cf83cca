"""`kubectl rollout status` rules of targets.kube_rollout, on Deployment objects as the API returns them."""

from __future__ import annotations

from typing import Any

from targets.kube_rollout import rollout_state


def deployment(generation: int, observed: int, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "somabrain", "generation": generation},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "somabrain", "image": "new"}]}}},
            "status": {"observedGeneration": observed, **status}}


DEADLINE = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": 'ReplicaSet "somabrain-1" has timed out progressing.'}]


def test_a_deadline_left_by_the_previous_generation_does_not_fail_a_new_rollout() -> None:
    state = rollout_state(deployment(3, 2, conditions=DEADLINE), [])
    assert not state.failed and not state.done
    assert "spec update to be observed" in state.message


def test_a_deadline_of_the_observed_generation_fails() -> None:
    state = rollout_state(deployment(3, 3, conditions=DEADLINE), [])
    assert state.failed and "progress deadline exceeded" in state.message


def test_done_when_the_new_replicas_are_available() -> None:
    state = rollout_state(deployment(3, 3, updatedReplicas=1, replicas=1, availableReplicas=1), [])
    assert state.done and not state.failed
