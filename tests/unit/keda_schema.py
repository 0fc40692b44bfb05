"""Check a KEDA ScaledObject (keda.sh/v1alpha1) without a cluster.

ScaledObject is not a built-in kind, so kubernetes_validate cannot check it. This is a JSON
Schema written from KEDA's documentation of the ScaledObject spec
(https://keda.sh/docs/latest/reference/scaledobject-spec/) and of the scalers we use
(prometheus, cpu, memory), plus the checks KEDA's admission webhook makes that a schema
cannot express. The HPA behavior KEDA passes through is checked with the real
autoscaling/v2 schema.
"""

from __future__ import annotations

from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]

KUBERNETES_VERSION = "1.32.0"
_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

_TRIGGER = {
    "type": "object",
    "required": ["type", "metadata"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string", "minLength": 1},
        "name": {"type": "string"},
        # Scaler parameters: a map of strings, whatever the scaler.
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "authenticationRef": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "kind": {"enum": ["TriggerAuthentication", "ClusterTriggerAuthentication"]},
            },
        },
        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
        "useCachedMetrics": {"type": "boolean"},
    },
}

SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": _NAME, "maxLength": 253},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                "ownerReferences": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["apiVersion", "kind", "name", "uid"],
                    },
                },
            },
        },
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string", "minLength": 1},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {
                    "type": "object",
                    "required": ["failureThreshold", "replicas"],
                    "properties": {
                        "failureThreshold": {"type": "integer", "minimum": 1},
                        "replicas": {"type": "integer", "minimum": 0},
                        "behavior": {"type": "string"},
                    },
                },
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                "behavior": {"type": "object"},
                            },
                        },
                        "scalingModifiers": {"type": "object"},
                    },
                },
                "triggers": {"type": "array", "minItems": 1, "items": _TRIGGER},
            },
        },
    },
}

_VALIDATOR = jsonschema.Draft7Validator(SCALED_OBJECT_SCHEMA)
_RESOURCE_TRIGGERS = {"cpu", "memory"}


def scaled_object_errors(obj: dict[str, Any]) -> list[str]:
    """What KEDA (its CRD schema, then its admission webhook) would reject; empty if none."""
    errors = [
        f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}"
        for e in _VALIDATOR.iter_errors(obj)
    ]
    if errors:
        return errors
    spec = obj["spec"]
    triggers = spec["triggers"]
    minimum = spec.get("minReplicaCount", 0)
    maximum = spec.get("maxReplicaCount", 100)
    if minimum > maximum:
        errors.append("spec: minReplicaCount must not exceed maxReplicaCount")
    if minimum == 0 and all(t["type"] in _RESOURCE_TRIGGERS for t in triggers):
        errors.append("spec: scaling to zero needs a trigger other than cpu or memory")
    names = [t["name"] for t in triggers if "name" in t]
    if len(names) != len(set(names)):
        errors.append("spec.triggers: trigger names must be unique")
    for index, trigger in enumerate(triggers):
        errors += [f"spec.triggers.{index}: {e}" for e in _trigger_errors(trigger)]
    behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
    if behavior is not None:
        errors += [
            f"spec.advanced.horizontalPodAutoscalerConfig.behavior: {e}"
            for e in _behavior_errors(behavior)
        ]
    return errors


def _trigger_errors(trigger: dict[str, Any]) -> list[str]:
    kind, metadata = trigger["type"], trigger["metadata"]
    metric_type = trigger.get("metricType", "AverageValue")
    errors = []
    if kind in _RESOURCE_TRIGGERS:
        if metric_type not in ("Utilization", "AverageValue"):
            errors.append(f"{kind} triggers take metricType Utilization or AverageValue")
        if "value" not in metadata:
            errors.append(f"{kind} trigger needs metadata.value")
        elif not metadata["value"].isdigit() and metric_type == "Utilization":
            errors.append("Utilization value must be a whole percentage")
    elif kind == "prometheus":
        for required in ("serverAddress", "query", "threshold"):
            if not metadata.get(required):
                errors.append(f"prometheus trigger needs metadata.{required}")
        for number in ("threshold", "activationThreshold"):
            if number in metadata and not _is_float(metadata[number]):
                errors.append(f"metadata.{number} must be a number, got {metadata[number]!r}")
        if metric_type == "Utilization":
            errors.append("prometheus triggers take metricType AverageValue or Value")
        if not metadata.get("serverAddress", "").startswith(("http://", "https://")):
            errors.append("metadata.serverAddress must be an http(s) URL")
    return errors


def _behavior_errors(behavior: dict[str, Any]) -> list[str]:
    """KEDA hands behavior to its HPA as is: check it with the real HPA schema."""
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "probe"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "probe"},
            "maxReplicas": 1,
            "behavior": behavior,
        },
    }
    try:
        kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [str(exc.message)]
    return []


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_DURATION = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"  # Go's time.ParseDuration
_INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}

# The KEDA HTTP add-on's HTTPScaledObject (http.keda.sh/v1alpha1), written from its CRD's
# schema (the copy the cluster tests install, from the add-on's config/crd), closed with
# additionalProperties so a misspelt field fails here instead of being pruned there.
HTTP_SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "http.keda.sh/v1alpha1"},
        "kind": {"const": "HTTPScaledObject"},
        "metadata": SCALED_OBJECT_SCHEMA["properties"]["metadata"],
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef"],
            "additionalProperties": False,
            "properties": {
                "hosts": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "pathPrefixes": {
                    "type": "array",
                    "items": {"type": "string", "pattern": "^/"},
                },
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["service"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string", "minLength": 1},
                        "service": {"type": "string", "minLength": 1},
                        "port": {**_INT32, "minimum": 1, "maximum": 65535},
                        "portName": {"type": "string", "minLength": 1},
                    },
                },
                "replicas": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "min": {**_INT32, "minimum": 0},
                        "max": {**_INT32, "minimum": 1},
                    },
                },
                "scalingMetric": {
                    "type": "object",
                    "additionalProperties": False,
                    "minProperties": 1,
                    "maxProperties": 1,
                    "properties": {
                        "concurrency": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"targetValue": {"type": "integer", "minimum": 1}},
                        },
                        "requestRate": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "targetValue": {"type": "integer", "minimum": 1},
                                "window": {"type": "string", "pattern": _DURATION},
                                "granularity": {"type": "string", "pattern": _DURATION},
                            },
                        },
                    },
                },
                "scaledownPeriod": {**_INT32, "minimum": 0},
                "initialCooldownPeriod": {**_INT32, "minimum": 0},
                "timeouts": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "conditionWait": {"type": "string", "pattern": _DURATION},
                        "responseHeader": {"type": "string", "pattern": _DURATION},
                    },
                },
            },
        },
    },
}


def http_scaled_object_errors(obj: dict[str, Any]) -> list[str]:
    """The schema, the CRD's CEL rule on scaleTargetRef, and what the add-on needs to scale."""
    validator = jsonschema.Draft202012Validator(HTTP_SCALED_OBJECT_SCHEMA)
    errors = [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(obj)
    ]
    if errors:
        return errors
    spec = obj["spec"]
    ref = spec["scaleTargetRef"]
    if ("portName" in ref) == ("port" in ref):
        errors.append("scaleTargetRef: must define either the 'portName' or the 'port'")
    if not ref.get("name"):
        errors.append("scaleTargetRef.name: the workload to scale")
    replicas = spec.get("replicas", {})
    if replicas.get("min", 0) > replicas.get("max", 100):
        errors.append("replicas.min must be <= replicas.max")
    if not spec.get("hosts"):
        errors.append("hosts: the interceptor routes by Host header; list at least one")
    return errors


def child_errors(obj: dict[str, Any]) -> list[str]:
    """Any rendered child: KEDA's kinds here, built-in kinds with the Kubernetes schemas."""
    if obj.get("kind") == "ScaledObject":
        return scaled_object_errors(obj)
    if obj.get("kind") == "HTTPScaledObject":
        return http_scaled_object_errors(obj)
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{obj['kind']}: {exc.message} at {list(exc.path)}"]
    return []
