"""Serving runtimes, looked up by spec.runtime."""

from __future__ import annotations

from ..api import Runtime
from .base import ServingRuntime
from .onnxruntime import OnnxRuntime
from .tfserving import TFServing
from .torchserve import TorchServe

RUNTIMES: dict[Runtime, ServingRuntime] = {
    Runtime.TFSERVING: TFServing(),
    Runtime.TORCHSERVE: TorchServe(),
    Runtime.ONNXRUNTIME: OnnxRuntime(),
}


def runtime_for(runtime: Runtime) -> ServingRuntime:
    return RUNTIMES[runtime]
