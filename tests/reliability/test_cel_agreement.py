"""The CRD (OpenAPI schema + CEL, what `kubectl apply` admits) and the operator's pydantic
models agree: ``crd_errors(obj) == []`` iff ``ModelDeployment.parse(obj)`` succeeds.

Both see the object as the API server would store it: unknown fields pruned, and null values
of fields that are not nullable dropped, before validation (``api_server_view``), so the
corpus may hold garbage of any shape. It holds only what the CRD can decide; the operator is
stricter, on purpose, in four places the CRD cannot express
(``test_where_the_operator_is_stricter`` proves each one is refused by the operator, named):

* keys of maps (spec.nodeSelector label keys, spec.resources resource names): OpenAPI has
  no propertyNames for CRDs, and a CEL rule iterating map keys of unbounded length is
  priced out by the API server's cost estimator;
* comparing quantities (requests <= limits, extended resources whole and equal): CEL's
  quantity library is not in cel-python, which checks our rules here;
* the Kubernetes types kept schemaless (affinity, env[].valueFrom, networkPolicy.from);
* structural limits in parse (nesting depth, value count, NaN): JSON from the API server
  cannot carry NaN, and the API server bounds the rest.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from crd_validator import crd_errors
from hypothesis import event, given
from rel_settings import CEL_EXAMPLES, count, fuzz
from rel_strategies import model_deployments

from kubeserve.api import InvalidSpec, ModelDeployment
from kubeserve.crd import crd

SCHEMA = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def api_server_view(value: Any, schema: dict[str, Any] = SCHEMA) -> Any:
    """Structural pruning: drop fields the schema does not declare (unless it preserves
    unknown fields) and nulls of fields that are not nullable."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return value
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            sub = properties.get(key) if properties is not None else extra
            if not isinstance(sub, dict) or (item is None and not sub.get("nullable")):
                continue
            out[key] = api_server_view(item, sub)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [api_server_view(item, schema["items"]) for item in value]
    return value


def agree(obj: dict[str, Any]) -> list[str]:
    count("examples: CRD vs operator")
    obj = api_server_view(copy.deepcopy(obj))
    errors = crd_errors(copy.deepcopy(obj))
    try:
        ModelDeployment.parse(obj)
        parsed: InvalidSpec | None = None
    except InvalidSpec as exc:
        parsed = exc
    if errors:
        assert parsed is not None, f"the CRD refuses but the operator admits: {errors}"
    else:
        assert parsed is None, f"the CRD admits but the operator refuses: {parsed}"
    return errors


@fuzz(CEL_EXAMPLES)
@given(obj=model_deployments(garbage=True, unknown=True, hostile_free_form=False, decidable=True))
def test_crd_and_operator_agree(obj: dict[str, Any]) -> None:
    event("both refuse" if agree(obj) else "both admit")


def md(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubeserve.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": "ml"},
        "spec": {"runtime": "onnxruntime", "model": {"uri": "s3://bucket/m"}, **spec},
    }


# The corners the generated corpus hits rarely, decided by hand.
EDGES = {
    "toleration-exists-with-value": md(
        tolerations=[{"key": "k", "operator": "Exists", "value": "v"}]
    ),
    "toleration-empty-key-equal": md(tolerations=[{"operator": "Equal", "value": "v"}]),
    "toleration-seconds-noschedule": md(
        tolerations=[{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]
    ),
    "toleration-bad-key": md(tolerations=[{"key": "a b", "operator": "Exists"}]),
    "toleration-ok": md(
        tolerations=[
            {"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}
        ]
    ),
    "quantity-bad-grammar": md(resources={"requests": {"cpu": "1.2.3"}}),
    "quantity-two-suffixes": md(resources={"requests": {"cpu": "1kM"}}),
    "quantity-negative-int": md(resources={"requests": {"cpu": -1}}),
    "quantity-negative-string": md(resources={"requests": {"cpu": "-1"}}),
    "quantity-exponent": md(resources={"requests": {"cpu": "1e3"}}),
    "node-selector-bad-value": md(nodeSelector={"zone": "a b"}),
    "rollout-string-count": md(rollout={"maxSurge": "2"}),
    "rollout-unavailable-150": md(rollout={"maxUnavailable": "150%"}),
    "name-uppercase": {**md(), "metadata": {"name": "MyModel", "namespace": "ml"}},
    "name-too-long": {**md(), "metadata": {"name": "a" * 254, "namespace": "ml"}},
}


@pytest.mark.parametrize("name", sorted(EDGES))
def test_crd_and_operator_agree_on_edges(name: str) -> None:
    agree(EDGES[name])


STRICTER = {
    "node-selector-key": (md(nodeSelector={"not a key": "v"}), "spec.nodeSelector"),
    "resource-name": (md(resources={"requests": {"foo": "1"}}), "spec.resources"),
    "requests-over-limits": (
        md(resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}),
        "spec.resources",
    ),
    "extended-fraction": (
        md(resources={"limits": {"example.com/fpga": "0.5"}}),
        "spec.resources",
    ),
    "affinity-shape": (
        md(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}),
        "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
    ),
    "value-from-two-sources": (
        md(
            env=[
                {
                    "name": "A",
                    "valueFrom": {
                        "fieldRef": {"fieldPath": "x"},
                        "secretKeyRef": {"name": "s", "key": "k"},
                    },
                }
            ]
        ),
        "spec.env.0.valueFrom",
    ),
    "peer-empty": (md(networkPolicy={"enabled": True, "from": [{}]}), "spec.networkPolicy.from"),
    "deep": (
        md(
            affinity={
                "x": [
                    [
                        [
                            [
                                [
                                    [
                                        [
                                            [
                                                [
                                                    [
                                                        [
                                                            [
                                                                [
                                                                    [
                                                                        [
                                                                            [
                                                                                [
                                                                                    [
                                                                                        [
                                                                                            [
                                                                                                [
                                                                                                    [
                                                                                                        [
                                                                                                            [
                                                                                                                [
                                                                                                                    [
                                                                                                                        [
                                                                                                                            [
                                                                                                                                [
                                                                                                                                    [
                                                                                                                                        [
                                                                                                                                            [
                                                                                                                                                [
                                                                                                                                                    [
                                                                                                                                                        [
                                                                                                                                                            [
                                                                                                                                                                [
                                                                                                                                                                    [
                                                                                                                                                                        [
                                                                                                                                                                            [
                                                                                                                                                                                [
                                                                                                                                                                                    [
                                                                                                                                                                                        [
                                                                                                                                                                                            [
                                                                                                                                                                                                [
                                                                                                                                                                                                    [
                                                                                                                                                                                                        [
                                                                                                                                                                                                            [
                                                                                                                                                                                                                [
                                                                                                                                                                                                                    [
                                                                                                                                                                                                                        1
                                                                                                                                                                                                                    ]
                                                                                                                                                                                                                ]
                                                                                                                                                                                                            ]
                                                                                                                                                                                                        ]
                                                                                                                                                                                                    ]
                                                                                                                                                                                                ]
                                                                                                                                                                                            ]
                                                                                                                                                                                        ]
                                                                                                                                                                                    ]
                                                                                                                                                                                ]
                                                                                                                                                                            ]
                                                                                                                                                                        ]
                                                                                                                                                                    ]
                                                                                                                                                                ]
                                                                                                                                                            ]
                                                                                                                                                        ]
                                                                                                                                                    ]
                                                                                                                                                ]
                                                                                                                                            ]
                                                                                                                                        ]
                                                                                                                                    ]
                                                                                                                                ]
                                                                                                                            ]
                                                                                                                        ]
                                                                                                                    ]
                                                                                                                ]
                                                                                                            ]
                                                                                                        ]
                                                                                                    ]
                                                                                                ]
                                                                                            ]
                                                                                        ]
                                                                                    ]
                                                                                ]
                                                                            ]
                                                                        ]
                                                                    ]
                                                                ]
                                                            ]
                                                        ]
                                                    ]
                                                ]
                                            ]
                                        ]
                                    ]
                                ]
                            ]
                        ]
                    ]
                ]
            }
        ),
        "spec.affinity",
    ),
}


@pytest.mark.parametrize("name", sorted(STRICTER))
def test_where_the_operator_is_stricter(name: str) -> None:
    """Admitted by the CRD (it cannot tell), refused by the operator with the field named:
    the object gets Ready=False InvalidSpec instead of failing every apply."""
    obj, field = STRICTER[name]
    assert crd_errors(copy.deepcopy(obj)) == [], "documented as beyond the CRD"
    with pytest.raises(InvalidSpec) as caught:
        ModelDeployment.parse(obj)
    assert caught.value.field.startswith(field), str(caught.value)
