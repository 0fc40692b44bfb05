"""engine keda: a KEDA ScaledObject (keda.sh/v1alpha1).

Runtime-native and GPU metrics become Prometheus triggers whose query returns one number
for the whole ModelDeployment, read by KEDA straight from Prometheus (config
prometheus_url): no prometheus-adapter needed. cpu and memory become KEDA's cpu and memory
triggers (metricType Utilization). KEDA creates and owns the HPA (keda-hpa-<name>);
advanced.horizontalPodAutoscalerConfig.behavior carries the scale-down stabilisation.

Scale to zero (minReplicas 0): KEDA scales the Deployment between 0 and 1 itself, on
whether any trigger is active, and hands 1..max to its HPA. cpu, memory and the pods' own
series read nothing at zero, so the API admits minReplicas 0 only with a metric that has
a query measured elsewhere (api.Autoscaling).
"""

from __future__ import annotations

from typing import Any

from ...api import ModelDeployment
from ...config import OperatorConfig
from ...runtimes.base import SERVER_CONTAINER
from ..labels import metadata
from ..names import child_name
from .hpa import hpa_behavior, quantity, utilization
from .signals import KEDA_METRIC_TYPES, RESOURCE_METRICS, Signal, keda_query, signals

API_VERSION = "keda.sh/v1alpha1"
KIND = "ScaledObject"


def scaled_object(md: ModelDeployment, cfg: OperatorConfig) -> dict[str, Any]:
    scaling = md.spec.autoscaling
    assert scaling is not None
    spec: dict[str, Any] = {
        "scaleTargetRef": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": child_name(md.name),
        },
        "minReplicaCount": scaling.min_replicas,
        "maxReplicaCount": scaling.max_replicas,
    }
    behavior = hpa_behavior(scaling)
    if behavior:
        if scaling.min_replicas == 0:
            # The last step, 1 -> 0, is KEDA's own and waits cooldownPeriod, not the HPA.
            spec["cooldownPeriod"] = behavior["scaleDown"]["stabilizationWindowSeconds"]
        spec["advanced"] = {"horizontalPodAutoscalerConfig": {"behavior": behavior}}
    spec["triggers"] = [_trigger(md, cfg, signal) for signal in signals(md)]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(md, child_name(md.name)),
        "spec": spec,
    }


def _trigger(md: ModelDeployment, cfg: OperatorConfig, signal: Signal) -> dict[str, Any]:
    metric = signal.metric
    if metric.type in RESOURCE_METRICS:
        return {
            "type": RESOURCE_METRICS[metric.type],
            "name": signal.trigger_name,
            "metricType": "Utilization",
            "metadata": {
                "value": str(utilization(metric.target)),
                "containerName": SERVER_CONTAINER,
            },
        }
    return {
        "type": "prometheus",
        "name": signal.trigger_name,
        "metricType": KEDA_METRIC_TYPES[metric.type],
        "metadata": {
            "serverAddress": cfg.prometheus_url,
            "query": keda_query(md, signal),
            "threshold": quantity(metric.target),
        },
    }
