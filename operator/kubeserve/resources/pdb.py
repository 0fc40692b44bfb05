"""A PodDisruptionBudget that keeps one pod serving during voluntary disruptions."""

from __future__ import annotations

from typing import Any

from ..api import ModelDeployment
from .labels import metadata, selector_labels
from .names import child_name


def pod_disruption_budget(md: ModelDeployment) -> dict[str, Any] | None:
    autoscaling = md.spec.autoscaling
    floor = autoscaling.min_replicas if autoscaling else md.spec.replicas
    if floor < 2:
        # With one pod, minAvailable 1 would block node drains forever.
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(md, child_name(md.name)),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": selector_labels(md)}},
    }
