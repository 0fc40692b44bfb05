"""Pure status computation: conditions from what was observed.

Conditions have the metav1.Condition shape. ``lastTransitionTime`` moves only when a
condition's status changes, and ``Ready`` rolls up the others. No phase state machine.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


@dataclass(frozen=True)
class Verdict:
    type: str
    status: str
    reason: str
    message: str = ""


def now_rfc3339() -> str:
    return (
        datetime.datetime.now(datetime.UTC)
        .replace(microsecond=0)
        .isoformat()
        .replace("+00:00", "Z")
    )


def merge_conditions(
    previous: Sequence[Mapping[str, Any]],
    verdicts: Iterable[Verdict],
    *,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """New conditions; untouched types are kept, each transition time moves only on change."""
    by_type = {c.get("type"): dict(c) for c in previous}
    for verdict in verdicts:
        old = by_type.get(verdict.type)
        changed = old is None or old.get("status") != verdict.status
        condition: dict[str, Any] = {
            "type": verdict.type,
            "status": verdict.status,
            "reason": verdict.reason,
            "message": verdict.message,
            "lastTransitionTime": now if changed or old is None else old["lastTransitionTime"],
        }
        if generation is not None:
            condition["observedGeneration"] = generation
        by_type[verdict.type] = condition
    return [by_type[key] for key in sorted(by_type, key=_condition_order)]


_ORDER = ["Ready", "InvalidSpec", "Available", "Progressing", "Schedulable", "AutoscalerReady"]


def _condition_order(kind: Any) -> tuple[int, str]:
    return (_ORDER.index(kind) if kind in _ORDER else len(_ORDER), str(kind))


def deployment_verdicts(deployment: Mapping[str, Any] | None) -> list[Verdict]:
    """Available and Progressing, copied from the Deployment's own conditions."""
    if deployment is None:
        return [
            Verdict("Available", UNKNOWN, "DeploymentMissing", "the Deployment does not exist yet"),
            Verdict(
                "Progressing", UNKNOWN, "DeploymentMissing", "the Deployment does not exist yet"
            ),
        ]
    observed = {c.get("type"): c for c in deployment.get("status", {}).get("conditions", [])}
    verdicts = []
    for kind in ("Available", "Progressing"):
        cond = observed.get(kind)
        if cond is None:
            verdicts.append(
                Verdict(kind, UNKNOWN, "NotReported", "the Deployment has not reported yet")
            )
        else:
            verdicts.append(
                Verdict(
                    kind,
                    cond.get("status", UNKNOWN),
                    cond.get("reason", "Unknown"),
                    cond.get("message", ""),
                )
            )
    return verdicts


def replica_counts(deployment: Mapping[str, Any] | None) -> tuple[int, int, int]:
    """(desired, current, ready) replicas of the Deployment."""
    if deployment is None:
        return 0, 0, 0
    status = deployment.get("status", {})
    desired = deployment.get("spec", {}).get("replicas", 1)
    return int(desired), int(status.get("replicas", 0)), int(status.get("readyReplicas", 0))


# The reasons of a Ready that the Deployment alone decides (see ready_verdict).
DEPLOYMENT_READY_REASONS = frozenset(
    {"DeploymentMissing", "ScaledToZero", "RolloutInProgress", "ReplicasNotReady", "ReplicasReady"}
)


def ready_verdict(
    deployment: Mapping[str, Any] | None,
    blockers: Sequence[Verdict] = (),
    *,
    autoscaled: bool = False,
) -> Verdict:
    """The roll-up. A blocker is a condition that, when False, explains why nothing serves.

    Ready means the current spec serves, as ``kubectl rollout status`` (and Flux's and Argo
    CD's health checks) see a Deployment: it has acted on its latest generation, no pod of
    an older template is left, and the new pods are available. Old pods still serving a
    broken new spec are not Ready. With an autoscaler, one available pod is enough: the
    autoscaler's scale-ups are not rollouts, and Ready must not flap with them.
    """
    for blocker in blockers:
        if blocker.status == FALSE:
            return Verdict("Ready", FALSE, blocker.reason, blocker.message)
    if deployment is None:
        return Verdict("Ready", FALSE, "DeploymentMissing", "the Deployment does not exist yet")
    desired, current, _ready = replica_counts(deployment)
    if desired == 0:
        return Verdict("Ready", FALSE, "ScaledToZero", "no replicas are running")
    status = deployment.get("status") or {}
    generation = (deployment.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        return Verdict(
            "Ready", FALSE, "RolloutInProgress", "the Deployment has not acted on this spec yet"
        )
    updated = int(status.get("updatedReplicas", 0))
    available = int(status.get("availableReplicas", 0))
    if current > updated or (not autoscaled and updated < desired):
        return Verdict(
            "Ready",
            FALSE,
            "RolloutInProgress",
            f"{updated}/{desired} replicas run the current spec, {available} available",
        )
    if available < (1 if autoscaled else desired):
        return Verdict("Ready", FALSE, "ReplicasNotReady", f"{available}/{desired} replicas ready")
    return Verdict("Ready", TRUE, "ReplicasReady", f"{available}/{desired} replicas ready")


def invalid_spec_verdicts(message: str) -> list[Verdict]:
    return [
        Verdict("Ready", FALSE, "InvalidSpec", message),
        Verdict("InvalidSpec", TRUE, "ValidationFailed", message),
    ]


def valid_spec_verdict() -> Verdict:
    return Verdict("InvalidSpec", FALSE, "SpecAccepted", "")


def status_for(
    previous: Mapping[str, Any],
    *,
    generation: int | None,
    verdicts: Iterable[Verdict],
    now: str,
    deployment: Mapping[str, Any] | None = None,
    url: str | None = None,
    autoscaler: Mapping[str, Any] | None = None,
    include_replicas: bool = True,
) -> dict[str, Any]:
    """The whole status object; ``None`` values clear fields in a merge patch."""
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": merge_conditions(
            previous.get("conditions", []), verdicts, generation=generation, now=now
        ),
    }
    if include_replicas:
        _desired, current, ready = replica_counts(deployment)
        status.update(
            {"replicas": current, "readyReplicas": ready, "url": url, "autoscaler": autoscaler}
        )
    return status


def find_condition(status: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any] | None:
    """The condition of this type in a status, if there is one."""
    conditions = (status or {}).get("conditions", [])
    return next((c for c in conditions if c.get("type") == kind), None)


def conditions_equal(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> bool:
    def key(c: Mapping[str, Any]) -> tuple[Any, ...]:
        return (
            c.get("type"),
            c.get("status"),
            c.get("reason"),
            c.get("message"),
            c.get("observedGeneration"),
        )

    return sorted(map(key, a), key=str) == sorted(map(key, b), key=str)
