"""Runtime options in the spec (issue 16): ONNX Runtime's execution provider and graph
optimisation level, TF Serving's XLA and batching parameters, TorchServe's batching; what
each renders to, and the combinations both validation layers refuse."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cel_helper import cel_errors
from crd_validator import crd_errors

from kubeserve.api import InvalidSpec, ModelDeployment
from kubeserve.config import OperatorConfig
from kubeserve.render import render

CFG = OperatorConfig()


def doc(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"runtime": "onnxruntime", "model": {"uri": "s3://bucket/m"}, **spec}
    return {
        "apiVersion": "kubeserve.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": "ml", "uid": "u-1"},
        "spec": body,
    }


def rendered(**spec: Any) -> list[dict[str, Any]]:
    return render(ModelDeployment.parse(doc(**spec)), CFG)


def container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = [o for o in objs if o["kind"] == "Deployment"]
    first: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return first


def config_map(objs: list[dict[str, Any]]) -> dict[str, str]:
    [cm] = [o for o in objs if o["kind"] == "ConfigMap"]
    data: dict[str, str] = cm["data"]
    return data


GPU = {"count": 1}


@pytest.mark.parametrize(
    ("session", "gpu", "flag"),
    [
        ({"executionProvider": "CPU"}, None, "--execution-provider=cpu"),
        ({"executionProvider": "CUDA"}, GPU, "--execution-provider=cuda"),
        ({"executionProvider": "TensorRT"}, GPU, "--execution-provider=tensorrt"),
    ],
)
def test_execution_provider_reaches_the_server_args(
    session: dict[str, str], gpu: dict[str, int] | None, flag: str
) -> None:
    spec: dict[str, Any] = {"sessionOptions": session}
    if gpu:
        spec["gpu"] = gpu
    args = container(rendered(**spec))["args"]
    assert flag in args
    assert len([a for a in args if a.startswith("--execution-provider")]) == 1


def test_without_a_provider_the_device_decides_and_no_strict_flag_is_passed() -> None:
    args = container(rendered(gpu=GPU, sessionOptions={"graphOptimizationLevel": "extended"}))[
        "args"
    ]
    assert "--device=cuda" in args
    assert "--graph-optimization-level=extended" in args
    assert not [a for a in args if a.startswith("--execution-provider")]


def test_the_server_accepts_every_flag_the_operator_renders() -> None:
    pytest.importorskip("onnxruntime")
    from kubeserve.dataplane.onnx_server.options import parse_options

    args = container(
        rendered(
            gpu=GPU,
            sessionOptions={"executionProvider": "TensorRT", "graphOptimizationLevel": "basic"},
        )
    )["args"]
    options, _ = parse_options(args)
    assert options.execution_provider == "tensorrt"
    assert options.graph_optimization_level == "basic"
    assert options.device == "cuda"


def test_tfserving_xla_flag_and_batching_parameters() -> None:
    objs = rendered(
        runtime="tfserving",
        batching={"maxBatchSize": 8, "maxDelayMs": 1.5},
        tfserving={
            "xla": True,
            "batchThreads": 2,
            "maxEnqueuedBatches": 50,
            "padVariableLengthInputs": True,
        },
    )
    assert "--xla_cpu_compilation_enabled=true" in container(objs)["args"]
    assert config_map(objs)["batching_parameters.txt"] == (
        "max_batch_size { value: 8 }\n"
        "batch_timeout_micros { value: 1500 }\n"
        "max_enqueued_batches { value: 50 }\n"
        "num_batch_threads { value: 2 }\n"
        "pad_variable_length_inputs: true\n"
    )


def test_tfserving_defaults_keep_xla_off_and_the_old_batching_file() -> None:
    objs = rendered(runtime="tfserving", batching={"maxBatchSize": 4})
    assert not [a for a in container(objs)["args"] if "xla" in a]
    text = config_map(objs)["batching_parameters.txt"]
    assert "max_enqueued_batches { value: 1000 }" in text
    assert "num_batch_threads { value: 4 }" in text
    assert "pad_variable_length_inputs" not in text


def test_torchserve_batching_maps_to_batch_size_and_max_batch_delay() -> None:
    objs = rendered(
        runtime="torchserve",
        model={"uri": "pvc://c/p"},
        batching={"maxBatchSize": 16, "maxDelayMs": 7.6},
    )
    props = dict(line.split("=", 1) for line in config_map(objs)["config.properties"].splitlines())
    [version] = json.loads(props["models"])["m"].values()
    assert version["batchSize"] == 16
    assert version["maxBatchDelay"] == 8  # TorchServe takes whole milliseconds


# (spec, message fragment): refused by the CRD's CEL rules and by the operator alike.
INVALID = {
    "cuda-without-gpu": (
        {"sessionOptions": {"executionProvider": "CUDA"}},
        "executionProvider CUDA and TensorRT need spec.gpu",
    ),
    "tensorrt-without-gpu": (
        {"sessionOptions": {"executionProvider": "TensorRT"}},
        "executionProvider CUDA and TensorRT need spec.gpu",
    ),
    "tfserving-options-on-onnx": (
        {"tfserving": {"xla": True}},
        "tfserving applies only to runtime tfserving",
    ),
    "tfserving-options-on-torchserve": (
        {"runtime": "torchserve", "tfserving": {"xla": True}},
        "tfserving applies only to runtime tfserving",
    ),
    "batch-threads-without-batching": (
        {"runtime": "tfserving", "tfserving": {"batchThreads": 2}},
        "set spec.batching too",
    ),
    "padding-without-batching": (
        {"runtime": "tfserving", "tfserving": {"padVariableLengthInputs": False}},
        "set spec.batching too",
    ),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_bad_combinations_are_refused_by_cel_and_by_the_operator(name: str) -> None:
    spec, message = INVALID[name]
    obj = doc(**spec)
    assert any(message in error for error in cel_errors("spec", obj["spec"])), name
    assert crd_errors(obj)
    with pytest.raises(InvalidSpec, match=message):
        ModelDeployment.parse(obj)


VALID = {
    "cpu-provider-without-gpu": {"sessionOptions": {"executionProvider": "CPU"}},
    "cuda-with-gpu": {"gpu": GPU, "sessionOptions": {"executionProvider": "CUDA"}},
    "tensorrt-with-gpu": {"gpu": GPU, "sessionOptions": {"executionProvider": "TensorRT"}},
    "xla-alone": {"runtime": "tfserving", "tfserving": {"xla": True}},
    "tfserving-batching-tuned": {
        "runtime": "tfserving",
        "batching": {"maxBatchSize": 8},
        "tfserving": {"batchThreads": 2, "maxEnqueuedBatches": 10},
    },
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_good_combinations_pass_both_layers(name: str) -> None:
    obj = doc(**VALID[name])
    assert cel_errors("spec", obj["spec"]) == []
    assert crd_errors(obj) == []
    ModelDeployment.parse(obj)
