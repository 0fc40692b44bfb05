"""The autoscaler: an autoscaling/v2 HorizontalPodAutoscaler (KEDA comes with issue 3)."""

from __future__ import annotations

from typing import Any

from ..api import AutoscalingEngine, MetricType, ModelDeployment
from ..config import OperatorConfig
from .labels import metadata
from .names import child_name

_RESOURCE_METRICS = {MetricType.CPU: "cpu", MetricType.MEMORY: "memory"}


def autoscaler(md: ModelDeployment, cfg: OperatorConfig) -> dict[str, Any] | None:
    scaling = md.spec.autoscaling
    if scaling is None or scaling.engine != AutoscalingEngine.HPA:
        return None
    metrics = [
        {
            "type": "Resource",
            "resource": {
                "name": _RESOURCE_METRICS[m.type],
                "target": {"type": "Utilization", "averageUtilization": round(m.target)},
            },
        }
        for m in scaling.metrics
        if m.type in _RESOURCE_METRICS
    ]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(md, child_name(md.name)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": child_name(md.name)},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": metrics,
        },
    }
