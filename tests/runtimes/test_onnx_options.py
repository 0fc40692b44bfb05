"""The ONNX server's session options from the spec: the execution provider is strict (the
server refuses to start without it), and the graph optimisation level reaches the session."""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # before anything imports onnxruntime

import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest
import torch
from fixtures_local import cli_env

from kubeserve.dataplane.onnx_server.model import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    TENSORRT_PROVIDER,
    ModelLoadError,
    SessionSettings,
    load_model,
    required_providers,
)

pytestmark = [
    pytest.mark.runtimes,
    # The TorchScript ONNX exporter (no onnxscript needed) is deprecated in torch 2.13.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

CPU_ONLY = CUDA_PROVIDER not in ort.get_available_providers()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx-options")
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    torch.onnx.export(
        net.eval(),
        (torch.zeros(1, 4),),
        str(out / "model.onnx"),
        dynamo=False,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
    )
    return out


def test_provider_chains_fall_back_per_node_but_require_their_head() -> None:
    everything = [TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER]
    assert required_providers("tensorrt", everything) == everything
    assert required_providers("tensorrt", [TENSORRT_PROVIDER, CPU_PROVIDER]) == [
        TENSORRT_PROVIDER,
        CPU_PROVIDER,
    ]
    assert required_providers("cuda", everything) == [CUDA_PROVIDER, CPU_PROVIDER]
    assert required_providers("cpu", everything) == [CPU_PROVIDER]
    with pytest.raises(ModelLoadError, match="TensorrtExecutionProvider is not available"):
        required_providers("tensorrt", [CUDA_PROVIDER, CPU_PROVIDER])


def test_cpu_provider_loads_on_cpu_only(model_dir: Path) -> None:
    model = load_model(model_dir / "model.onnx", SessionSettings(execution_provider="cpu"))
    assert model.providers == [CPU_PROVIDER]


@pytest.mark.skipif(not CPU_ONLY, reason="this onnxruntime build has CUDA")
def test_a_gpu_provider_missing_from_the_build_fails_the_load_clearly(model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="CUDAExecutionProvider is not available"):
        load_model(model_dir / "model.onnx", SessionSettings(execution_provider="cuda"))
    # Without an explicit provider, --device cuda keeps its documented CPU fallback.
    fallback = load_model(model_dir / "model.onnx", SessionSettings(device="cuda"))
    assert fallback.providers == [CPU_PROVIDER]


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("disable", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
        ("basic", ort.GraphOptimizationLevel.ORT_ENABLE_BASIC),
        ("extended", ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED),
        ("all", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
    ],
)
def test_graph_optimization_level_reaches_the_session(
    model_dir: Path, level: str, expected: object
) -> None:
    model = load_model(model_dir / "model.onnx", SessionSettings(graph_optimization_level=level))
    assert model.session.get_session_options().graph_optimization_level == expected


@pytest.mark.skipif(not CPU_ONLY, reason="this onnxruntime build has CUDA")
def test_the_server_process_exits_nonzero_naming_the_missing_provider(
    model_dir: Path, tmp_path: Path
) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubeserve.dataplane.onnx_server",
            f"--model-dir={model_dir}",
            "--model-name=m",
            "--port=0",
            "--execution-provider=tensorrt",
        ],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0, done.stderr[-2000:]
    assert "execution provider tensorrt: TensorrtExecutionProvider is not available" in (
        done.stderr
    )
