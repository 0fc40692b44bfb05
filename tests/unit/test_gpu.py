"""spec.gpu: device resources, image variants and runtime settings, node selection merged with
the user's own scheduling fields, and the contradictions both validation layers reject."""

from __future__ import annotations

import re
from typing import Any

import pytest
from cel_helper import cel_errors, schema_errors
from keda_schema import child_errors

from kubeserve.api import InvalidSpec, ModelDeployment, Runtime
from kubeserve.config import OperatorConfig
from kubeserve.render import render
from kubeserve.resources.deployment import deployment
from kubeserve.runtimes.base import SERVER_CONTAINER

CFG = OperatorConfig()
# A Kubernetes resource name: an optional DNS prefix, then a qualified name.
RESOURCE_NAME = re.compile(r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def md_obj(runtime: str = "tfserving", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubeserve.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "resnet", "namespace": "ml"},
        "spec": {"runtime": runtime, "model": {"uri": "s3://models/resnet"}, **spec},
    }


# Any ConfigMap: these tests look at scheduling, not at what it holds.
CONFIG_MAP = {"metadata": {"name": "cm"}, "data": {}}


def md(runtime: str = "tfserving", **spec: Any) -> ModelDeployment:
    return ModelDeployment.parse(md_obj(runtime, **spec))


def pod(model: ModelDeployment) -> dict[str, Any]:
    spec: dict[str, Any] = deployment(model, CFG, config=CONFIG_MAP)["spec"]["template"]["spec"]
    return spec


def server(model: ModelDeployment) -> dict[str, Any]:
    return next(c for c in pod(model)["containers"] if c["name"] == SERVER_CONTAINER)


def config_map_data(model: ModelDeployment) -> dict[str, str]:
    for child in render(model, CFG):
        if child["kind"] == "ConfigMap":
            data: dict[str, str] = child["data"]
            return data
    return {}


# ---------------------------------------------------------------- GPU x runtime


GPU_CASES: dict[str, tuple[dict[str, Any] | None, str | None, int]] = {
    "cpu": (None, None, 0),
    "one-gpu": ({"count": 1}, "nvidia.com/gpu", 1),
    "two-gpus": ({"count": 2}, "nvidia.com/gpu", 2),
    "mig": ({"migProfile": "1g.10gb"}, "nvidia.com/mig-1g.10gb", 1),
    "mig-media": ({"migProfile": "1g.10gb+me"}, "nvidia.com/mig-1g.10gb.me", 1),
    "amd": ({"count": 1, "resourceName": "amd.com/gpu"}, "amd.com/gpu", 1),
}


@pytest.mark.parametrize("runtime", [r.value for r in Runtime])
@pytest.mark.parametrize("case", sorted(GPU_CASES))
def test_gpu_by_runtime_image_resources_and_settings(runtime: str, case: str) -> None:
    gpu, resource, count = GPU_CASES[case]
    model = md(runtime, **({"gpu": gpu} if gpu else {}))
    container = server(model)

    # The runtime's GPU image variant, from the operator's config.
    assert container["image"] == CFG.image(Runtime(runtime), gpu is not None)
    if runtime == "tfserving" and gpu:
        assert container["image"].endswith("-gpu")

    # Device resources in both limits and requests, equal, and nowhere without a GPU.
    resources = container["resources"]
    devices = {k: v for k, v in resources["limits"].items() if "/" in k}
    assert devices == ({resource: str(count)} if gpu else {})
    assert {k: v for k, v in resources["requests"].items() if "/" in k} == devices
    assert all(RESOURCE_NAME.match(name) for name in devices)

    # Each runtime's own GPU switch.
    if runtime == "onnxruntime":
        assert f"--device={'cuda' if gpu else 'cpu'}" in container["args"]
    if runtime == "torchserve":
        assert f"number_of_gpu={count}\n" in config_map_data(model)["config.properties"]

    for child in render(model, CFG):
        assert child_errors(child) == [], child["kind"]


def test_cpu_requests_and_limits_stay_with_a_gpu() -> None:
    model = md(
        gpu={"count": 1},
        resources={"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "16Gi"}},
    )
    assert server(model)["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
        "limits": {"memory": "16Gi", "nvidia.com/gpu": "1"},
    }


def test_image_override_wins_over_the_gpu_variant() -> None:
    model = md(gpu={"count": 1}, image="registry.example/tfs:custom")
    assert server(model)["image"] == "registry.example/tfs:custom"


def test_runtime_class_name_only_when_asked() -> None:
    assert pod(md(gpu={"runtimeClassName": "nvidia"}))["runtimeClassName"] == "nvidia"
    assert "runtimeClassName" not in pod(md(gpu={"count": 1}))


# ---------------------------------------------------------------- node selection


def test_product_and_memory_become_required_node_affinity() -> None:
    model = md(
        gpu={"product": ["NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"], "minMemoryMiB": 40000}
    )
    assert pod(model)["affinity"] == {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "nvidia.com/gpu.product",
                                "operator": "In",
                                "values": ["NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"],
                            },
                            # At least 40000 MiB: Gt is strict.
                            {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["39999"]},
                        ]
                    }
                ]
            }
        }
    }


def test_label_keys_and_taint_key_come_from_the_config() -> None:
    cfg = OperatorConfig(
        gpu_product_label="gpu/product", gpu_memory_label="gpu/mem", gpu_taint_key="gpu"
    )
    model = md(gpu={"product": ["X"], "minMemoryMiB": 2})
    spec = deployment(model, cfg, config=None)["spec"]["template"]["spec"]
    term = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]
    assert [e["key"] for e in term["matchExpressions"]] == ["gpu/product", "gpu/mem"]
    assert spec["tolerations"] == [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_a_bare_gpu_request_adds_only_the_toleration() -> None:
    spec = pod(md(gpu={"count": 1}))
    assert "affinity" not in spec and "nodeSelector" not in spec
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]


def test_other_vendors_get_the_toleration_named_after_their_resource() -> None:
    # The Kubernetes convention (ExtendedResourceToleration): taint key = resource name.
    spec = pod(md(gpu={"resourceName": "amd.com/gpu"}))
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ]


USER_AFFINITY: dict[str, Any] = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}
                    ]
                },
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gpu-7"]}]},
            ]
        },
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 10,
                "preference": {"matchExpressions": [{"key": "spot", "operator": "DoesNotExist"}]},
            }
        ],
    },
    "podAntiAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {
                "weight": 100,
                "podAffinityTerm": {
                    "topologyKey": "kubernetes.io/hostname",
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "resnet"}},
                },
            }
        ]
    },
}
GPU_RULE = {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-L4"]}

MERGE_CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "node-selector-kept": (
        {"nodeSelector": {"pool": "inference", "kubernetes.io/arch": "amd64"}},
        {"nodeSelector": {"pool": "inference", "kubernetes.io/arch": "amd64"}},
    ),
    "affinity-terms-each-get-the-gpu-rule": (
        {"affinity": USER_AFFINITY},
        {
            "affinity": {
                **USER_AFFINITY,
                "nodeAffinity": {
                    **USER_AFFINITY["nodeAffinity"],
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "topology.kubernetes.io/zone",
                                        "operator": "In",
                                        "values": ["a"],
                                    },
                                    GPU_RULE,
                                ]
                            },
                            {
                                "matchFields": [
                                    {"key": "metadata.name", "operator": "In", "values": ["gpu-7"]}
                                ],
                                "matchExpressions": [GPU_RULE],
                            },
                        ]
                    },
                },
            }
        },
    ),
    "only-preferred-user-affinity": (
        {
            "affinity": {
                "nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": USER_AFFINITY[
                        "nodeAffinity"
                    ]["preferredDuringSchedulingIgnoredDuringExecution"]
                }
            }
        },
        {
            "affinity": {
                "nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": USER_AFFINITY[
                        "nodeAffinity"
                    ]["preferredDuringSchedulingIgnoredDuringExecution"],
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [GPU_RULE]}]
                    },
                }
            }
        },
    ),
    "pod-affinity-only": (
        {"affinity": {"podAntiAffinity": USER_AFFINITY["podAntiAffinity"]}},
        {
            "affinity": {
                "podAntiAffinity": USER_AFFINITY["podAntiAffinity"],
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [GPU_RULE]}]
                    }
                },
            }
        },
    ),
    "user-tolerations-kept-gpu-appended": (
        {
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
            ]
        },
        {
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            ]
        },
    ),
    "user-already-tolerates-the-gpu-taint": (
        {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]},
        {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]},
    ),
    "user-tolerates-everything": (
        {"tolerations": [{"operator": "Exists"}]},
        {"tolerations": [{"operator": "Exists"}]},
    ),
    "user-toleration-for-one-value-is-not-enough": (
        {
            "tolerations": [
                {
                    "key": "nvidia.com/gpu",
                    "operator": "Equal",
                    "value": "present",
                    "effect": "NoSchedule",
                }
            ]
        },
        {
            "tolerations": [
                {
                    "key": "nvidia.com/gpu",
                    "operator": "Equal",
                    "value": "present",
                    "effect": "NoSchedule",
                },
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            ]
        },
    ),
}


@pytest.mark.parametrize("case", sorted(MERGE_CASES))
def test_user_scheduling_fields_are_merged_never_overwritten(case: str) -> None:
    user, expected = MERGE_CASES[case]
    model = md(gpu={"product": ["NVIDIA-L4"]}, **user)
    spec = pod(model)
    for key, value in expected.items():
        assert spec[key] == value, key
    # Rendering twice gives the same result: the merge never mutates the parsed spec.
    assert pod(model) == spec
    for child in render(model, CFG):
        assert child_errors(child) == [], child["kind"]


@pytest.mark.parametrize("case", sorted(MERGE_CASES))
def test_without_a_gpu_the_user_fields_pass_through_untouched(case: str) -> None:
    user, _ = MERGE_CASES[case]
    spec = pod(md(**user))
    assert spec.get("nodeSelector") == user.get("nodeSelector")
    assert spec.get("affinity") == user.get("affinity")
    assert spec.get("tolerations", []) == user.get("tolerations", [])


# ---------------------------------------------------------------- contradictions

VALID_GPUS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "count-8": {"count": 8},
    "products": {
        "product": ["NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"],
        "minMemoryMiB": 40000,
    },
    "mig": {"migProfile": "3g.40gb", "product": ["NVIDIA-A100-SXM4-80GB"]},
    "mig-count-1": {"migProfile": "1g.10gb", "count": 1},
    "mig-media": {"migProfile": "1g.10gb+me"},
    "amd": {"resourceName": "amd.com/gpu", "count": 2},
    "intel": {"resourceName": "gpu.intel.com/i915"},
    "runtime-class": {"runtimeClassName": "nvidia"},
}

# name -> (spec.gpu, a fragment of the message both layers give)
INVALID_GPUS: dict[str, tuple[dict[str, Any], str]] = {
    "mig-with-count": ({"migProfile": "1g.10gb", "count": 2}, "only one MIG device"),
    "mig-on-amd": ({"migProfile": "1g.10gb", "resourceName": "amd.com/gpu"}, "NVIDIA feature"),
    "mig-on-other-vendor": (
        {"migProfile": "2g.20gb", "resourceName": "gpu.intel.com/i915"},
        "NVIDIA feature",
    ),
    "mig-with-min-memory": ({"migProfile": "1g.10gb", "minMemoryMiB": 10000}, "selects whole GPUs"),
    "mig-as-resource-name": (
        {"resourceName": "nvidia.com/mig-1g.10gb"},
        "request a MIG slice with",
    ),
}

# Rejected by the OpenAPI schema (types, bounds, patterns) and by pydantic.
MALFORMED_GPUS: dict[str, dict[str, Any]] = {
    "fractional": {"count": 0.5},
    "fractional-above-one": {"count": 1.5},
    "zero": {"count": 0},
    "too-many": {"count": 17},
    "count-as-string": {"count": "1"},
    "resource-without-domain": {"resourceName": "gpu"},
    "bad-mig-profile": {"migProfile": "big"},
    "product-not-a-label-value": {"product": ["NVIDIA A100"]},
    "empty-product-list": {"product": []},
    "zero-memory": {"minMemoryMiB": 0},
    "unknown-field": {"memory": "80Gi"},
}


@pytest.mark.parametrize("name", sorted(VALID_GPUS))
def test_valid_gpu_specs_pass_both_layers(name: str) -> None:
    gpu = VALID_GPUS[name]
    assert schema_errors("spec.gpu", gpu) == []
    assert cel_errors("spec.gpu", gpu) == []
    md(gpu=gpu)


@pytest.mark.parametrize("name", sorted(INVALID_GPUS))
def test_contradictions_are_rejected_by_cel_and_pydantic_alike(name: str) -> None:
    gpu, fragment = INVALID_GPUS[name]
    assert schema_errors("spec.gpu", gpu) == [], "the schema admits it; the rule must catch it"
    errors = cel_errors("spec.gpu", gpu)
    assert len(errors) == 1 and fragment in errors[0], errors
    assert errors[0].startswith("gpu."), "CEL messages name the field"
    with pytest.raises(InvalidSpec) as caught:
        md(gpu=gpu)
    assert str(caught.value).startswith("spec.gpu") and fragment in str(caught.value)


@pytest.mark.parametrize("name", sorted(MALFORMED_GPUS))
def test_malformed_gpu_specs_are_rejected_by_schema_and_pydantic(name: str) -> None:
    gpu = MALFORMED_GPUS[name]
    if name != "unknown-field":  # structural schemas prune unknown fields; kubectl warns
        assert schema_errors("spec.gpu", gpu), "the CRD schema must reject it"
    with pytest.raises(InvalidSpec) as caught:
        md(gpu=gpu)
    assert str(caught.value).startswith("spec.gpu")


def test_fractional_count_is_refused_because_the_schema_says_integer() -> None:
    assert schema_at_gpu_count()["type"] == "integer"
    assert any("is not of type 'integer'" in e for e in schema_errors("spec.gpu", {"count": 1.5}))


def schema_at_gpu_count() -> dict[str, Any]:
    from cel_helper import schema_at

    return schema_at("spec.gpu.count")


def test_docs_explain_every_gpu_and_rollout_field() -> None:
    from pathlib import Path

    from kubeserve.api import Gpu, Rollout

    docs = (Path(__file__).resolve().parents[2] / "docs" / "gpu.md").read_text()
    for model in (Gpu, Rollout):
        for name, field in model.model_fields.items():
            assert f"`{field.alias or name}`" in docs, (
                f"docs/gpu.md must explain {field.alias or name}"
            )
