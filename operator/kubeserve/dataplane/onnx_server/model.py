"""One ONNX model in one ONNX Runtime InferenceSession: loading, signature, warm-up, running.

Everything here is blocking; the service calls it from its single inference thread (ORT releases
the GIL while it runs, so the event loop keeps serving).
"""

from __future__ import annotations

import logging
import os

# Before onnxruntime is imported anywhere: its telemetry client phones home unless this is set
# (onnxruntime.disable_telemetry_events() is not enough). A default, so a user may still opt in.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from kubeserve.cpu import read_budget

from .datatypes import ORT_TO_V2, V2_TO_NUMPY
from .protocol import TensorSpec

log = logging.getLogger(__name__)

GRAPH_OPTIMIZATION_LEVELS: Mapping[str, Any] = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
# --execution-provider NAME -> the providers handed to InferenceSession, in priority order:
# ORT places each node on the first provider that can run it.
PROVIDER_CHAINS: Mapping[str, tuple[str, ...]] = {
    "cpu": (CPU_PROVIDER,),
    "cuda": (CUDA_PROVIDER, CPU_PROVIDER),
    "tensorrt": (TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER),
}


class ModelLoadError(Exception):
    """The model file is missing, is not a valid ONNX model, or uses types we cannot serve."""


@dataclass(frozen=True)
class SessionSettings:
    intra_op_threads: int = 0  # 0: the CPU budget (intra_op_threads()), else ORT's default
    inter_op_threads: int = 0
    graph_optimization_level: str = "all"
    device: str = "cpu"
    spinning: bool = False
    execution_provider: str | None = None  # strict (required_providers); None: by device


def select_providers(device: str, available: Sequence[str]) -> list[str]:
    """Execution providers for `device`, CPU last so ORT can place unsupported nodes there."""
    if device == "cuda":
        if CUDA_PROVIDER in available:
            return [CUDA_PROVIDER, CPU_PROVIDER]
        log.warning(
            "--device cuda was requested but CUDAExecutionProvider is not available in this "
            "onnxruntime build (available: %s); FALLING BACK TO CPU",
            ", ".join(available),
        )
    return [CPU_PROVIDER]


def required_providers(name: str, available: Sequence[str]) -> list[str]:
    """The chain for --execution-provider NAME; ModelLoadError when the build lacks it.

    No silent CPU fallback: a spec that asks for CUDA or TensorRT and gets CPU would run,
    slowly, on a GPU node it pays for."""
    chain = PROVIDER_CHAINS[name]
    if chain[0] not in available:
        raise ModelLoadError(
            f"execution provider {name}: {chain[0]} is not available in this onnxruntime "
            f"build (available: {', '.join(available)}); use the GPU image "
            "(onnxruntime-gpu) on a node with a GPU, or another sessionOptions.executionProvider"
        )
    # TensorRT falls back to CUDA for the nodes it cannot run, where CUDA is there.
    return [provider for provider in chain if provider in available]


class LoadedModel:
    """An InferenceSession plus the signature read from its graph."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.inputs = tuple(_spec(arg) for arg in session.get_inputs())
        self.outputs = tuple(_spec(arg) for arg in session.get_outputs())
        self.output_names = [spec.name for spec in self.outputs]
        self.providers: list[str] = list(session.get_providers())
        # What the session was created with, as ORT reports it (0: its default).
        self.intra_op_threads: int = session.get_session_options().intra_op_num_threads

    @property
    def batch_dim_is_dynamic(self) -> bool:
        """True when every input and output has a dynamic first dimension, the batch axis."""
        return all(spec.shape[:1] == (-1,) for spec in (*self.inputs, *self.outputs))

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run every output; the caller picks what each request asked for."""
        results = self.session.run(self.output_names, dict(feeds))
        return dict(zip(self.output_names, results, strict=True))

    def warmup_feeds(self) -> dict[str, np.ndarray]:
        """Zeros of each input's declared shape, dynamic dimensions set to 1."""
        feeds: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            shape = tuple(1 if dim == -1 else dim for dim in spec.shape)
            if spec.datatype == "BYTES":
                feeds[spec.name] = np.full(shape, "", dtype=object)
            else:
                feeds[spec.name] = np.zeros(shape, dtype=V2_TO_NUMPY[spec.datatype])
        return feeds

    def warmup(self) -> None:
        """One inference, so the first real request does not pay for lazy initialisation."""
        self.run(self.warmup_feeds())


def load_model(path: Path, settings: SessionSettings) -> LoadedModel:
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads(settings.intra_op_threads)
    options.inter_op_num_threads = settings.inter_op_threads
    options.graph_optimization_level = GRAPH_OPTIMIZATION_LEVELS[settings.graph_optimization_level]
    # ORT's pool threads busy-wait after each call by default. Here they share the cores with
    # the event loop that parses the next request (and, in a pod, with a CPU quota), so the spin
    # slows down everything else: measured 7.5 -> 3.3 ms of server CPU per request on 2 cores
    # (docs/performance.md). Opt back in where cores are dedicated to ORT.
    spin = "1" if settings.spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    available = ort.get_available_providers()
    if settings.execution_provider:
        providers = required_providers(settings.execution_provider, available)
    else:
        providers = select_providers(settings.device, available)
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # ORT raises its own exception types for bad files
        raise ModelLoadError(f"onnxruntime could not load {path}: {exc}") from exc
    if settings.execution_provider and session.get_providers()[0] != providers[0]:
        # ORT drops a provider whose libraries (CUDA, cuDNN, TensorRT) fail to load, logs
        # it, and carries on with the rest.
        raise ModelLoadError(
            f"execution provider {settings.execution_provider}: onnxruntime could not start "
            f"{providers[0]} (the session has {', '.join(session.get_providers())}); check "
            "the CUDA/TensorRT libraries in the image and the GPU on the node"
        )
    model = LoadedModel(session)
    unsupported = [
        f"{spec.name} ({spec.datatype})"
        for spec in model.inputs
        if spec.datatype not in V2_TO_NUMPY
    ]
    if unsupported:
        raise ModelLoadError(f"inputs with unsupported types: {', '.join(unsupported)}")
    return model


def intra_op_threads(requested: int) -> int:
    """The intra-op pool's size: the flag; else this container's CPU budget (its cgroup's CPU
    limit, rounded up, or its CPU affinity: kubeserve.cpu); else 0, ONNX Runtime's default of
    one thread per physical core, right for a process that may use the whole machine. ORT
    counts the calling thread in the pool, so N keeps N cores busy."""
    if requested:
        log.info("intra-op threads: %d (--intra-op-threads)", requested)
        return requested
    try:
        budget = read_budget()
    except (OSError, ValueError) as exc:
        log.warning("intra-op threads: ONNX Runtime's default; cannot read the CPU limit: %s", exc)
        return 0
    if budget.cpus is None:
        log.info("intra-op threads: ONNX Runtime's default, one per core (%s)", budget.source)
        return 0
    log.info("intra-op threads: %d, from %s", budget.cpus, budget.source)
    return budget.cpus


def _spec(arg: Any) -> TensorSpec:
    datatype = ORT_TO_V2.get(arg.type)
    if datatype is None:
        # Sequences and maps (e.g. sklearn's ZipMap output) have no v2 tensor representation.
        raise ModelLoadError(f"'{arg.name}' has type {arg.type}, which is not a tensor type")
    # ORT gives ints for fixed dims and a name or None for dynamic ones; v2 says -1.
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in arg.shape)
    return TensorSpec(arg.name, datatype, shape)
