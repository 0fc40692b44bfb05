"""The checker the fuzz tests trust (rel_k8s) can fail, and agrees with kubernetes-validate.

rel_k8s compiles each Kubernetes 1.32 strict schema once; kubernetes_validate.validate
reloads them per call. Same verdicts on rendered objects and on broken ones. The rules
beyond the schemas each catch a known-bad object.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
from rel_k8s import K8S_VERSION, parse_quantity, problems, schema_problems, semantic_problems

from kubeserve.api import ModelDeployment
from kubeserve.config import OperatorConfig
from kubeserve.render import render


def rendered(**spec: Any) -> list[dict[str, Any]]:
    obj = {
        "apiVersion": "kubeserve.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": "ml", "uid": "u-1"},
        "spec": {"runtime": "torchserve", "model": {"uri": "s3://bucket/m"}, **spec},
    }
    return render(ModelDeployment.parse(obj), OperatorConfig())


SAMPLES = [
    *rendered(replicas=3, networkPolicy={"enabled": True}),
    *rendered(autoscaling={"minReplicas": 2, "maxReplicas": 5}, gpu={"count": 1}),
]


def library_says(obj: dict[str, Any]) -> bool:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError:
        return False
    return True


@pytest.mark.parametrize("index", range(len(SAMPLES)))
def test_cached_validator_matches_library(index: int) -> None:
    obj = SAMPLES[index]
    assert library_says(obj) and schema_problems(obj) == []
    broken = copy.deepcopy(obj)
    broken["unknownField"] = 1  # strict: no unknown fields
    assert not library_says(broken)
    assert schema_problems(broken) != []


def deployment() -> dict[str, Any]:
    return copy.deepcopy(next(o for o in SAMPLES if o["kind"] == "Deployment"))


def pod(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


def _name(obj: dict[str, Any]) -> None:
    obj["metadata"]["name"] = "1-starts-with-a-digit"


def _label(obj: dict[str, Any]) -> None:
    obj["metadata"]["labels"]["bad key"] = "v"


def _selector(obj: dict[str, Any]) -> None:
    obj["spec"]["selector"]["matchLabels"]["extra"] = "x"


def _quantity(obj: dict[str, Any]) -> None:
    pod(obj)["containers"][0]["resources"]["requests"]["cpu"] = "1kM"


def _over_limit(obj: dict[str, Any]) -> None:
    resources = pod(obj)["containers"][0]["resources"]
    resources["requests"]["memory"], resources["limits"]["memory"] = "4Gi", "1Gi"


def _toleration(obj: dict[str, Any]) -> None:
    pod(obj)["tolerations"] = [{"operator": "Equal", "value": "x"}]


def _port_name(obj: dict[str, Any]) -> None:
    pod(obj)["containers"][0]["ports"][0]["name"] = "much-too-long-port-name"


def _volume_mount(obj: dict[str, Any]) -> None:
    pod(obj)["containers"][0]["volumeMounts"].append({"name": "nope", "mountPath": "/x"})


def _env_twice(obj: dict[str, Any]) -> None:
    pod(obj)["containers"][0]["env"] = [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]


def _both_zero(obj: dict[str, Any]) -> None:
    obj["spec"]["strategy"] = {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"},
    }


BREAKERS = {
    "name": _name,
    "label": _label,
    "selector": _selector,
    "quantity": _quantity,
    "over-limit": _over_limit,
    "toleration": _toleration,
    "port-name": _port_name,
    "volume-mount": _volume_mount,
    "env-twice": _env_twice,
    "both-zero": _both_zero,
}


@pytest.mark.parametrize("case", sorted(BREAKERS))
def test_rules_beyond_the_schema_catch_what_the_api_server_refuses(case: str) -> None:
    obj = deployment()
    assert problems(obj) == []
    BREAKERS[case](obj)
    assert semantic_problems(obj), f"{case} went unnoticed"


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", "0.5"), ("2Gi", str(2 * 1024**3)), ("1e3", "1000"), (".5", "0.5"), ("+1", "1")],
)
def test_quantities(text: str, value: str) -> None:
    from decimal import Decimal

    assert parse_quantity(text) == Decimal(value)


@pytest.mark.parametrize("text", ["1.2.3", "1kM", "", "1iB", "1 Gi", ".", "1e", "m"])
def test_not_quantities(text: str) -> None:
    assert parse_quantity(text) is None
