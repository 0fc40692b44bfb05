"""The autoscaler that owns the replica count: an HPA (engine hpa), a KEDA ScaledObject
(engine keda) or a KEDA HTTP add-on HTTPScaledObject (engine keda-http).

``autoscaler(md, cfg)`` renders exactly one of them, or nothing without spec.autoscaling;
reconcile prunes the kind not rendered, so switching engines or turning autoscaling off
leaves nothing behind.
"""

from __future__ import annotations

from typing import Any

from ...api import AutoscalingEngine, ModelDeployment
from ...config import OperatorConfig
from .hpa import horizontal_pod_autoscaler
from .keda import scaled_object
from .keda_http import http_scaled_object
from .signals import adapter_config_yaml, adapter_rules
from .status import (
    AUTOSCALER_READY,
    KEDA_HTTP_NOT_INSTALLED,
    KEDA_NOT_INSTALLED,
    AutoscalerRef,
    AutoscalerState,
    autoscaler_status,
    expected_autoscaler,
    http_add_on_hpa_name,
    keda_hpa_name,
    not_installed,
)

__all__ = [
    "AUTOSCALER_READY",
    "KEDA_HTTP_NOT_INSTALLED",
    "KEDA_NOT_INSTALLED",
    "AutoscalerRef",
    "AutoscalerState",
    "adapter_config_yaml",
    "adapter_rules",
    "autoscaler",
    "autoscaler_status",
    "expected_autoscaler",
    "http_add_on_hpa_name",
    "keda_hpa_name",
    "not_installed",
]


def autoscaler(md: ModelDeployment, cfg: OperatorConfig) -> dict[str, Any] | None:
    scaling = md.spec.autoscaling
    if scaling is None:
        return None
    if scaling.engine == AutoscalingEngine.KEDA:
        return scaled_object(md, cfg)
    if scaling.engine == AutoscalingEngine.KEDA_HTTP:
        return http_scaled_object(md, cfg)
    return horizontal_pod_autoscaler(md)
