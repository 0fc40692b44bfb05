"""The AutoscalerReady condition and replica counts, read from an HPA, a ScaledObject or an
HTTPScaledObject (KEDA HTTP add-on).

Pure functions over the objects as the API returns them (dicts).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from ...api import AutoscalingEngine, ModelDeployment
from ...status import FALSE, TRUE, UNKNOWN, Verdict
from ..names import child_name
from . import keda, keda_http

AUTOSCALER_READY = "AutoscalerReady"
AUTOSCALER_ACTIVE = "AutoscalerActive"
AUTOSCALER_PENDING = "AutoscalerPending"
KEDA_NOT_INSTALLED_REASON = "KEDANotInstalled"
KEDA_HTTP_NOT_INSTALLED_REASON = "KEDAHTTPAddOnNotInstalled"
# engine keda-http, the HTTPScaledObject Ready: the reason says which mode is in force.
KEDA_HTTP_ACTIVE = "KEDAHTTPAddOnActive"

KEDA_NOT_INSTALLED = Verdict(
    AUTOSCALER_READY,
    FALSE,
    KEDA_NOT_INSTALLED_REASON,
    "spec.autoscaling.engine is keda, but this cluster does not serve keda.sh/v1alpha1 "
    "ScaledObjects: install KEDA (https://keda.sh/docs/latest/deploy/) or use engine hpa",
)

KEDA_HTTP_NOT_INSTALLED = Verdict(
    AUTOSCALER_READY,
    FALSE,
    KEDA_HTTP_NOT_INSTALLED_REASON,
    "spec.autoscaling.engine is keda-http, but this cluster does not serve http.keda.sh/v1alpha1 "
    "HTTPScaledObjects: install KEDA and its HTTP add-on (helm chart kedacore/keda-add-ons-http, "
    "docs/autoscaling.md) or use engine keda or hpa",
)


def not_installed(api_version: str) -> Verdict:
    """AutoscalerReady when the API of an optional autoscaler kind is not served."""
    return KEDA_HTTP_NOT_INSTALLED if api_version == keda_http.API_VERSION else KEDA_NOT_INSTALLED


# HPA ScalingActive reasons when a metric cannot be read, and what usually serves it.
_METRIC_SOURCES = {
    "FailedGetPodsMetric": "prometheus-adapter with the kubeserve rules (docs/autoscaling.md)",
    "FailedGetObjectMetric": "prometheus-adapter with the kubeserve rules (docs/autoscaling.md)",
    "FailedGetExternalMetric": "an external metrics API server (KEDA or prometheus-adapter)",
    "FailedGetResourceMetric": "metrics-server",
    "FailedGetContainerResourceMetric": "metrics-server",
}


class AutoscalerState(NamedTuple):
    current: int | None
    desired: int | None
    condition: Verdict


class AutoscalerRef(NamedTuple):
    api_version: str
    kind: str
    name: str


def expected_autoscaler(md: ModelDeployment) -> AutoscalerRef | None:
    """Which object owns the replicas (None without spec.autoscaling)."""
    scaling = md.spec.autoscaling
    if scaling is None:
        return None
    if scaling.engine == AutoscalingEngine.KEDA:
        return AutoscalerRef(keda.API_VERSION, keda.KIND, child_name(md.name))
    if scaling.engine == AutoscalingEngine.KEDA_HTTP:
        return AutoscalerRef(keda_http.API_VERSION, keda_http.KIND, child_name(md.name))
    return AutoscalerRef("autoscaling/v2", "HorizontalPodAutoscaler", child_name(md.name))


def keda_hpa_name(scaled_object: Mapping[str, Any]) -> str:
    """The HPA KEDA creates for a ScaledObject (read it for current/desired replicas)."""
    status = scaled_object.get("status") or {}
    if status.get("hpaName"):
        return str(status["hpaName"])
    advanced = (scaled_object.get("spec") or {}).get("advanced") or {}
    configured = (advanced.get("horizontalPodAutoscalerConfig") or {}).get("name")
    return str(configured or f"keda-hpa-{scaled_object['metadata']['name']}")


def http_add_on_hpa_name(http_scaled_object: Mapping[str, Any]) -> str:
    """The HPA behind an HTTPScaledObject: the add-on names its ScaledObject after the
    HTTPScaledObject, and KEDA names the HPA after that."""
    return f"keda-hpa-{http_scaled_object['metadata']['name']}"


def autoscaler_status(
    obj: Mapping[str, Any] | None, *, hpa: Mapping[str, Any] | None = None
) -> AutoscalerState:
    """(current, desired, AutoscalerReady) from an HPA or a KEDA ScaledObject.

    For a ScaledObject, pass the HPA KEDA made for it (``keda_hpa_name``) as ``hpa`` to get
    replica counts; without it they are None. The same for an HTTPScaledObject
    (``http_add_on_hpa_name``).
    """
    if obj is None:
        return AutoscalerState(
            None,
            None,
            Verdict(
                AUTOSCALER_READY,
                UNKNOWN,
                AUTOSCALER_PENDING,
                "the autoscaler has not been created yet",
            ),
        )
    if obj.get("kind") == keda.KIND:
        return _scaled_object(obj, hpa)
    if obj.get("kind") == keda_http.KIND:
        return _http_scaled_object(obj, hpa)
    return _hpa(obj)


def _conditions(obj: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    status = (obj or {}).get("status") or {}
    return {c.get("type", ""): c for c in status.get("conditions") or []}


def _replicas(hpa: Mapping[str, Any] | None) -> tuple[int | None, int | None]:
    status = (hpa or {}).get("status") or {}
    return status.get("currentReplicas"), status.get("desiredReplicas")


def _hpa(hpa: Mapping[str, Any]) -> AutoscalerState:
    current, desired = _replicas(hpa)
    conditions = _conditions(hpa)
    able = conditions.get("AbleToScale")
    active = conditions.get("ScalingActive")
    if able is None or active is None:
        return AutoscalerState(
            current,
            desired,
            Verdict(
                AUTOSCALER_READY,
                UNKNOWN,
                AUTOSCALER_PENDING,
                "the HorizontalPodAutoscaler has not computed a scale yet",
            ),
        )
    for condition in (able, active):
        if condition.get("status") == FALSE:
            reason = str(condition.get("reason") or condition["type"])
            message = f"HorizontalPodAutoscaler {condition['type']}=False"
            if condition.get("message"):
                message += f": {condition['message']}"
            if reason in _METRIC_SOURCES:
                message += f" (is {_METRIC_SOURCES[reason]} installed?)"
            return AutoscalerState(
                current, desired, Verdict(AUTOSCALER_READY, FALSE, reason, message)
            )
    if active.get("status") != TRUE:
        return AutoscalerState(
            current,
            desired,
            Verdict(
                AUTOSCALER_READY,
                UNKNOWN,
                str(active.get("reason") or AUTOSCALER_PENDING),
                str(active.get("message", "")),
            ),
        )
    message = f"the HorizontalPodAutoscaler is scaling (current {current}, desired {desired})"
    limited = conditions.get("ScalingLimited")
    if limited and limited.get("status") == TRUE and limited.get("message"):
        message += f"; {limited['message']}"
    return AutoscalerState(
        current, desired, Verdict(AUTOSCALER_READY, TRUE, AUTOSCALER_ACTIVE, message)
    )


def _scaled_object(obj: Mapping[str, Any], hpa: Mapping[str, Any] | None) -> AutoscalerState:
    current, desired = _replicas(hpa)
    conditions = _conditions(obj)
    ready = conditions.get("Ready")
    active = conditions.get("Active")
    paused = conditions.get("Paused")
    fallback = conditions.get("Fallback")
    if paused and paused.get("status") == TRUE:
        return AutoscalerState(
            current,
            desired,
            Verdict(
                AUTOSCALER_READY,
                FALSE,
                "ScaledObjectPaused",
                str(paused.get("message") or "KEDA scaling is paused"),
            ),
        )
    if ready is None or ready.get("status") not in (TRUE, FALSE):
        return AutoscalerState(
            current,
            desired,
            Verdict(
                AUTOSCALER_READY,
                UNKNOWN,
                AUTOSCALER_PENDING,
                "KEDA has not checked the ScaledObject yet",
            ),
        )
    if ready["status"] == FALSE:
        reason = str(ready.get("reason") or "ScaledObjectNotReady")
        message = f"KEDA ScaledObject not ready: {ready.get('message', '')}".rstrip(": ")
        return AutoscalerState(current, desired, Verdict(AUTOSCALER_READY, FALSE, reason, message))
    if fallback and fallback.get("status") == TRUE:
        message = str(fallback.get("message") or "KEDA cannot read the triggers' metrics")
        return AutoscalerState(
            current, desired, Verdict(AUTOSCALER_READY, FALSE, "FallbackActive", message)
        )
    spec = obj.get("spec") or {}
    minimum = spec.get("minReplicaCount")
    if active and active.get("status") == FALSE:
        if minimum == 0:
            # KEDA takes the Deployment to zero itself (after cooldownPeriod); its HPA,
            # whose floor is 1, does not show that.
            desired = 0
            message = "no trigger is active: KEDA scales to zero after cooldownPeriod"
        else:
            message = f"no trigger is active: held at minReplicaCount ({minimum})"
    else:
        message = f"KEDA is scaling on its triggers (current {current}, desired {desired})"
    return AutoscalerState(
        current, desired, Verdict(AUTOSCALER_READY, TRUE, AUTOSCALER_ACTIVE, message)
    )


def _http_scaled_object(obj: Mapping[str, Any], hpa: Mapping[str, Any] | None) -> AutoscalerState:
    """The add-on's Ready condition; the message names the mode (the interceptor holds
    requests while the first pod starts) and what reaches it."""
    current, desired = _replicas(hpa)
    ready = _conditions(obj).get("Ready")
    if ready is None or ready.get("status") not in (TRUE, FALSE):
        return AutoscalerState(
            current,
            desired,
            Verdict(
                AUTOSCALER_READY,
                UNKNOWN,
                AUTOSCALER_PENDING,
                "the KEDA HTTP add-on has not checked the HTTPScaledObject yet",
            ),
        )
    if ready["status"] == FALSE:
        reason = str(ready.get("reason") or "HTTPScaledObjectNotReady")
        message = f"KEDA HTTP add-on HTTPScaledObject not ready: {ready.get('message', '')}"
        return AutoscalerState(
            current, desired, Verdict(AUTOSCALER_READY, FALSE, reason, message.rstrip(": "))
        )
    spec = obj.get("spec") or {}
    minimum = (spec.get("replicas") or {}).get("min")
    hosts = ", ".join(spec.get("hosts") or [])
    wait = (spec.get("timeouts") or {}).get("conditionWait", "")
    if minimum == 0:
        message = (
            "scale from zero through the KEDA HTTP add-on: its interceptor holds requests "
            f"for {hosts} up to {wait} while the first pod starts"
        )
    else:
        message = f"scaling through the KEDA HTTP add-on's interceptor on requests for {hosts}"
    if current is not None or desired is not None:
        message += f" (current {current}, desired {desired})"
    return AutoscalerState(
        current, desired, Verdict(AUTOSCALER_READY, TRUE, KEDA_HTTP_ACTIVE, message)
    )
