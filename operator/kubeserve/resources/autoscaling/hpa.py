"""engine hpa: an autoscaling/v2 HorizontalPodAutoscaler.

cpu and memory are ContainerResource metrics of the server container (utilization of its
requests; sidecars a mesh injects do not skew them). Runtime-native and GPU metrics are
Pods metrics: per-pod values the custom metrics API serves, which needs prometheus-adapter
with the rules from ``signals.adapter_rules()`` (docs/autoscaling.md). GPU utilization is
a Pods metric too, not External: dcgm-exporter labels each GPU's series with the pod it
is assigned to, so the HPA averages over exactly the target's pods, the same way it does
for the runtime's series, with no selector to maintain.
"""

from __future__ import annotations

from typing import Any

from ...api import Autoscaling, ModelDeployment
from ...runtimes.base import SERVER_CONTAINER
from ..labels import metadata
from ..names import child_name
from .signals import RESOURCE_METRICS, Signal, signals


def horizontal_pod_autoscaler(md: ModelDeployment) -> dict[str, Any]:
    scaling = md.spec.autoscaling
    assert scaling is not None
    spec: dict[str, Any] = {
        "scaleTargetRef": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": child_name(md.name),
        },
        "minReplicas": scaling.min_replicas,
        "maxReplicas": scaling.max_replicas,
        "metrics": [_metric(signal) for signal in signals(md)],
    }
    behavior = hpa_behavior(scaling)
    if behavior:
        spec["behavior"] = behavior
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(md, child_name(md.name)),
        "spec": spec,
    }


def hpa_behavior(scaling: Autoscaling) -> dict[str, Any] | None:
    """HorizontalPodAutoscalerBehavior; KEDA takes the same object."""
    seconds = scaling.behavior.scale_down_stabilization_seconds if scaling.behavior else None
    if seconds is None:
        return None
    return {"scaleDown": {"stabilizationWindowSeconds": seconds}}


def _metric(signal: Signal) -> dict[str, Any]:
    metric = signal.metric
    if metric.type in RESOURCE_METRICS:
        return {
            "type": "ContainerResource",
            "containerResource": {
                "name": RESOURCE_METRICS[metric.type],
                "container": SERVER_CONTAINER,
                "target": {"type": "Utilization", "averageUtilization": utilization(metric.target)},
            },
        }
    assert signal.series is not None, "metrics[].query needs engine keda (api.Autoscaling)"
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": signal.series.metric_name},
            "target": {"type": "AverageValue", "averageValue": quantity(metric.target)},
        },
    }


def utilization(target: float) -> int:
    """averageUtilization is a whole percentage, at least 1."""
    return max(1, round(target))


def quantity(value: float) -> str:
    """A Kubernetes quantity for a target: "50", "0.5", "12.25" (never an exponent)."""
    if float(value).is_integer():
        return str(int(value))
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "0") else "0.000001"
