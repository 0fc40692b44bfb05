"""A PodDisruptionBudget that keeps one pod serving during voluntary disruptions.

Only with a floor of at least two replicas (spec.replicas, or autoscaling.minReplicas):
with one pod, minAvailable 1 would block every node drain. Pods that are not Ready (a
crash-looping server, a model that fails to load) may always be evicted
(unhealthyPodEvictionPolicy AlwaysAllow): they serve nothing, and a broken replica must
not hold a GPU node hostage during a drain.
"""

from __future__ import annotations

from typing import Any

from ..api import ModelDeployment
from .labels import metadata, selector_labels
from .names import child_name


def pod_disruption_budget(md: ModelDeployment) -> dict[str, Any] | None:
    autoscaling = md.spec.autoscaling
    floor = autoscaling.min_replicas if autoscaling else md.spec.replicas
    if floor < 2:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(md, child_name(md.name)),
        "spec": {
            "minAvailable": 1,
            "selector": {"matchLabels": selector_labels(md)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
