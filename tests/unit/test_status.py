"""Status computation: condition transitions and the Ready roll-up."""

from __future__ import annotations

from typing import Any

import pytest

from kubeserve.status import (
    FALSE,
    TRUE,
    UNKNOWN,
    Verdict,
    deployment_verdicts,
    merge_conditions,
    ready_verdict,
)

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def deployment(
    replicas: int = 1,
    ready: int = 0,
    available: str | None = None,
    *,
    updated: int | None = None,
    observed: int = 1,
) -> dict[str, Any]:
    """A Deployment at generation 1 as the controller reports it; ``updated`` pods run it."""
    updated = replicas if updated is None else updated
    status: dict[str, Any] = {
        "observedGeneration": observed,
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
    }
    if available:
        status["conditions"] = [
            {"type": "Available", "status": available, "reason": "R", "message": "m"}
        ]
    return {"metadata": {"generation": 1}, "spec": {"replicas": replicas}, "status": status}


def test_transition_time_moves_only_when_status_changes() -> None:
    first = merge_conditions(
        [], [Verdict("Ready", FALSE, "ReplicasNotReady", "0/1")], generation=1, now=T0
    )
    assert first[0]["lastTransitionTime"] == T0
    # Same status, new reason and message: the time stays.
    second = merge_conditions(
        first, [Verdict("Ready", FALSE, "Other", "still")], generation=2, now=T1
    )
    assert second[0]["lastTransitionTime"] == T0
    assert second[0]["reason"] == "Other" and second[0]["observedGeneration"] == 2
    # Status flips: the time moves.
    third = merge_conditions(
        second, [Verdict("Ready", TRUE, "ReplicasReady", "1/1")], generation=2, now=T1
    )
    assert third[0]["lastTransitionTime"] == T1


def test_untouched_conditions_are_kept_and_order_is_stable() -> None:
    old = [
        {
            "type": "Schedulable",
            "status": TRUE,
            "reason": "NodesMatch",
            "message": "",
            "lastTransitionTime": T0,
        }
    ]
    merged = merge_conditions(old, [Verdict("Ready", TRUE, "R", "")], generation=1, now=T1)
    assert [c["type"] for c in merged] == ["Ready", "Schedulable"]
    assert merged[1]["lastTransitionTime"] == T0


@pytest.mark.parametrize(
    ("obj", "blockers", "status", "reason"),
    [
        (None, [], FALSE, "DeploymentMissing"),
        (deployment(1, 0), [], FALSE, "ReplicasNotReady"),
        (deployment(2, 2, "True"), [], TRUE, "ReplicasReady"),
        # Fewer than all replicas: serving, but the rollout is not done.
        (deployment(2, 1, "True"), [], FALSE, "ReplicasNotReady"),
        # The old pods serve while none of the new spec's is ready: not Ready.
        (deployment(2, 2, "True", updated=1), [], FALSE, "RolloutInProgress"),
        (deployment(2, 2, "True", observed=0), [], FALSE, "RolloutInProgress"),
        (deployment(0, 0), [], FALSE, "ScaledToZero"),
        (
            deployment(2, 2, "True"),
            [Verdict("Ready", FALSE, "OwnershipConflict", "Service x")],
            FALSE,
            "OwnershipConflict",
        ),
        (
            deployment(2, 2, "True"),
            [Verdict("AutoscalerReady", TRUE, "Applied", "")],
            TRUE,
            "ReplicasReady",
        ),
    ],
)
def test_ready_rollup(
    obj: dict[str, Any] | None, blockers: list[Verdict], status: str, reason: str
) -> None:
    verdict = ready_verdict(obj, blockers)
    assert (verdict.status, verdict.reason) == (status, reason)


def test_with_an_autoscaler_one_available_pod_of_the_current_spec_is_ready() -> None:
    # The HPA raised replicas to 3; its new pods are starting: a scale-up, not a rollout.
    scaling = deployment(3, 1, "True")
    assert ready_verdict(scaling, autoscaled=True).status == TRUE
    assert ready_verdict(scaling).status == FALSE
    # ... but old pods alone never make it Ready.
    old_only = deployment(3, 3, "True", updated=0)
    assert ready_verdict(old_only, autoscaled=True).reason == "RolloutInProgress"


def test_available_and_progressing_come_from_the_deployment() -> None:
    assert [v.status for v in deployment_verdicts(None)] == [UNKNOWN, UNKNOWN]
    available, progressing = deployment_verdicts(deployment(1, 1, "True"))
    assert (available.status, available.reason, available.message) == (TRUE, "R", "m")
    assert (progressing.status, progressing.reason) == (UNKNOWN, "NotReported")
