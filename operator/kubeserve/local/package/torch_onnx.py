"""PyTorch -> DIR/model.onnx with a dynamic batch axis, checked against torch with ONNX Runtime."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from ..errors import LocalError, first_line
from .quiet import quiet
from .result import Packaged
from .torch_model import TorchModel, max_abs_diff, random_like, run_torch

# Our server and the exported graph agree on these names; users see them in /v2/models/NAME.
INPUT_NAME = "input"
OUTPUT_NAME = "output"
# ONNX Runtime 1.32 runs opsets up to 23; 18 is the dynamo exporter's own default and is
# understood by every ONNX Runtime release of the last two years.
DEFAULT_OPSET = 18
MODEL_FILE = "model.onnx"


def package_onnx(
    model: TorchModel, example: Any, out_dir: Path, *, opset: int, tolerance: float, force: bool
) -> Packaged:
    target = out_dir / MODEL_FILE
    if target.exists() and not force:
        raise LocalError(f"{target} exists; pass --force to overwrite it")
    out_dir.mkdir(parents=True, exist_ok=True)
    _export(model, example, target, opset)
    checks, signature = verify(model.module, example, target, tolerance=tolerance)
    return Packaged(
        runtime="onnxruntime",
        files=(target,),
        model_uri=out_dir,
        model_name=None,
        checks=checks,
        details=(signature,),
    )


def _export(model: TorchModel, example: Any, target: Path, opset: int) -> None:
    import torch

    try:
        # The exporter logs a line per optional torchvision op it cannot find, warns that the
        # TorchScript path is deprecated, and on failure logs pages of fake-tensor tracebacks.
        with quiet(logging.CRITICAL):
            if model.scripted:
                # torch.export (the dynamo exporter) cannot trace a ScriptModule; the
                # TorchScript exporter can, and is still shipped (deprecated) in torch 2.13.
                torch.onnx.export(
                    model.module,
                    (example,),
                    str(target),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                )
            else:
                program = torch.onnx.export(
                    model.module,
                    (example,),
                    dynamo=True,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                    verbose=False,
                )
                if program is None:  # only the TorchScript exporter returns None
                    raise LocalError("torch.onnx.export returned no ONNX program")
                program.save(str(target))
    except LocalError:
        raise
    except Exception as exc:
        message = re.sub(r"\x1b\[[0-9;]*m", "", first_line(exc))  # the exporter's colours
        raise LocalError(f"torch.onnx.export failed: {type(exc).__name__}: {message}") from exc


def verify(
    module: Any, example: Any, path: Path, *, tolerance: float
) -> tuple[tuple[str, ...], str]:
    """Run the file with ONNX Runtime at the example's batch size and a different one.

    Returns what was checked and the graph's signature (what v2 clients send and get)."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise LocalError(f"ONNX Runtime cannot load {path}: {first_line(exc)}") from exc
    batch = int(example.shape[0])
    other = random_like(example, batch=batch + 2)
    checks = []
    for tensor in (example, other):
        expected = run_torch(module, tensor)
        try:
            actual = session.run(None, {session.get_inputs()[0].name: tensor.numpy()})[0]
        except Exception as exc:
            raise LocalError(
                f"ONNX Runtime failed on a batch of {tensor.shape[0]}: {first_line(exc)}"
            ) from exc
        diff = max_abs_diff(actual, expected)
        if diff > tolerance:
            raise LocalError(
                f"{path}: ONNX Runtime and torch differ by {diff:.3g} (> --tolerance "
                f"{tolerance:g}) at batch size {tensor.shape[0]}"
            )
        checks.append(
            f"ONNX Runtime matches torch at batch size {tensor.shape[0]} "
            f"(max abs diff {diff:.2g} <= {tolerance:g})"
        )
    return tuple(checks), _signature(session)


def _signature(session: Any) -> str:
    def describe(args: Any) -> str:
        return "; ".join(
            f"{arg.name}: {arg.type.removeprefix('tensor(').removesuffix(')')} "
            f"[{', '.join(str(dim) for dim in arg.shape)}]"
            for arg in args
        )

    inputs, outputs = describe(session.get_inputs()), describe(session.get_outputs())
    return f"inputs ({inputs}) -> outputs ({outputs})"
