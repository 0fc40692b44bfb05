"""The Deployment strategy: GPU-safe by default (no surge pod needing a spare GPU), spec.rollout
overrides; and who owns spec.replicas."""

from __future__ import annotations

from typing import Any

import pytest
from cel_helper import cel_errors
from keda_schema import child_errors

from kubeserve.api import InvalidSpec, ModelDeployment
from kubeserve.config import OperatorConfig
from kubeserve.render import render
from kubeserve.resources.deployment import deployment, strategy

CFG = OperatorConfig()
GPU = {"count": 1}
HPA = {"minReplicas": 1, "maxReplicas": 4}
KEDA_ZERO = {
    "engine": "keda",
    "minReplicas": 0,
    "maxReplicas": 4,
    "metrics": [{"type": "requestsPerSecond", "target": 5, "query": "sum(rate(x[2m]))"}],
}


def md(**spec: Any) -> ModelDeployment:
    return ModelDeployment.parse(
        {
            "apiVersion": "kubeserve.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "resnet", "namespace": "ml"},
            "spec": {"runtime": "tfserving", "model": {"uri": "s3://models/m"}, **spec},
        }
    )


def rolling(surge: int | str, unavailable: int | str) -> dict[str, Any]:
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable},
    }


RECREATE = {"type": "Recreate"}

# name -> (spec, expected strategy)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # Without a GPU: Kubernetes' own defaults.
    "cpu": ({}, rolling("25%", "25%")),
    "cpu-replicas-3": ({"replicas": 3}, rolling("25%", "25%")),
    "cpu-autoscaled": ({"autoscaling": HPA}, rolling("25%", "25%")),
    "cpu-recreate": ({"rollout": {"strategy": "Recreate"}}, RECREATE),
    "cpu-surge-only": ({"rollout": {"maxSurge": 1}}, rolling(1, "25%")),
    "cpu-both": ({"rollout": {"maxSurge": "50%", "maxUnavailable": 0}}, rolling("50%", 0)),
    # With a GPU: never ask for a spare GPU.
    "gpu-one-replica": ({"gpu": GPU}, RECREATE),
    "gpu-zero-replicas": ({"gpu": GPU, "replicas": 0}, RECREATE),
    "gpu-replicas-3": ({"gpu": GPU, "replicas": 3}, rolling(0, 1)),
    "gpu-autoscaled-from-one": ({"gpu": GPU, "autoscaling": HPA}, rolling(0, 1)),
    "gpu-keda-from-zero": ({"gpu": GPU, "autoscaling": KEDA_ZERO}, rolling(0, 1)),
    "mig-replicas-2": ({"gpu": {"migProfile": "1g.10gb"}, "replicas": 2}, rolling(0, 1)),
    # spec.rollout overrides; a half-given pair is completed to stay valid.
    "gpu-explicit-recreate": (
        {"gpu": GPU, "replicas": 4, "rollout": {"strategy": "Recreate"}},
        RECREATE,
    ),
    "gpu-explicit-rolling-one-replica": (
        {"gpu": GPU, "rollout": {"strategy": "RollingUpdate"}},
        rolling(0, 1),
    ),
    "gpu-spare-gpu": ({"gpu": GPU, "replicas": 2, "rollout": {"maxSurge": 1}}, rolling(1, 0)),
    "gpu-spare-gpu-percent": (
        {"gpu": GPU, "replicas": 2, "rollout": {"maxSurge": "25%"}},
        rolling("25%", 0),
    ),
    "gpu-surge-zero": ({"gpu": GPU, "replicas": 2, "rollout": {"maxSurge": 0}}, rolling(0, 1)),
    "gpu-faster": ({"gpu": GPU, "replicas": 8, "rollout": {"maxUnavailable": 2}}, rolling(0, 2)),
    "gpu-never-down": (
        {"gpu": GPU, "replicas": 2, "rollout": {"maxUnavailable": 0}},
        rolling(1, 0),
    ),
    "gpu-never-down-percent": (
        {"gpu": GPU, "replicas": 2, "rollout": {"maxUnavailable": "0%"}},
        rolling(1, "0%"),
    ),
    "gpu-both-given": (
        {"gpu": GPU, "replicas": 4, "rollout": {"maxSurge": 2, "maxUnavailable": "50%"}},
        rolling(2, "50%"),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_strategy(case: str) -> None:
    spec, expected = CASES[case]
    model = md(**spec)
    assert strategy(model) == expected
    rendered = deployment(model, CFG, config=None)
    assert rendered["spec"]["strategy"] == expected
    assert child_errors(rendered) == []


def test_every_rolling_default_can_make_progress() -> None:
    for spec, expected in CASES.values():
        if expected["type"] == "RollingUpdate":
            pair = expected["rollingUpdate"]
            assert {str(pair["maxSurge"]), str(pair["maxUnavailable"])} - {"0", "0%"}, spec


REPLICAS: dict[str, tuple[dict[str, Any], int | None]] = {
    "fixed": ({"replicas": 3}, 3),
    "fixed-zero": ({"replicas": 0}, 0),
    "hpa-owns-them": ({"replicas": 3, "autoscaling": HPA}, None),
    "keda-owns-them": ({"autoscaling": KEDA_ZERO}, None),
}


@pytest.mark.parametrize("case", sorted(REPLICAS))
def test_spec_replicas_only_without_an_autoscaler(case: str) -> None:
    spec, expected = REPLICAS[case]
    rendered = deployment(md(**spec), CFG, config=None)["spec"]
    assert rendered.get("replicas") == expected
    assert ("replicas" in rendered) == (expected is not None)


INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "both-zero": ({"maxSurge": 0, "maxUnavailable": 0}, "cannot both be 0"),
    "both-zero-percent": ({"maxSurge": "0%", "maxUnavailable": "0"}, "cannot both be 0"),
    "recreate-with-surge": ({"strategy": "Recreate", "maxSurge": 1}, "apply only to RollingUpdate"),
    "recreate-with-unavailable": (
        {"strategy": "Recreate", "maxUnavailable": 1},
        "apply only to RollingUpdate",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_rollouts_are_rejected_by_cel_and_pydantic(case: str) -> None:
    rollout, fragment = INVALID[case]
    errors = cel_errors("spec.rollout", rollout)
    assert len(errors) == 1 and fragment in errors[0], errors
    with pytest.raises(InvalidSpec, match=fragment) as caught:
        md(rollout=rollout)
    assert str(caught.value).startswith("spec.rollout")


@pytest.mark.parametrize(
    "rollout", [{"maxSurge": 0}, {"maxUnavailable": 0}, {"maxSurge": 0, "maxUnavailable": 1}, {}]
)
def test_valid_rollouts_pass_both_layers(rollout: dict[str, Any]) -> None:
    assert cel_errors("spec.rollout", rollout) == []
    md(rollout=rollout)


def test_gpu_rollout_renders_valid_objects() -> None:
    for child in render(md(gpu=GPU, replicas=3, rollout={"maxSurge": 1}), CFG):
        assert child_errors(child) == [], child["kind"]
