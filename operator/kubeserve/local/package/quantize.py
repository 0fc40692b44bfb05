"""PyTorch -> ONNX -> int8 ONNX (ONNX Runtime quantisation), measured against the float model.

The float export is checked against torch first (torch_onnx.verify), then quantised in a
scratch directory: `dynamic` (quantize_dynamic: int8 weights, activation scales computed per
call) or `static` (quantize_static, QDQ format: int8 weights and activations, activation
ranges from calibration rows). Both models then run in ONNX Runtime on the same rows and the
same example batch; the accuracy change, the speed-up and the sizes are reported, and
DIR/model.onnx is written only when the tolerances hold (or with --force).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LocalError, first_line
from . import quant_report
from .quiet import quiet
from .result import Packaged
from .torch_model import TorchModel, random_like
from .torch_onnx import MODEL_FILE, _export, verify

MODES = ("dynamic", "static")
DEFAULT_CALIBRATION_ROWS = 128
DEFAULT_BENCH_RUNS = 200
EVAL_CHUNK = 64  # rows per session.run while comparing the two models
WARMUP_RUNS = 10


class QuantizationRejected(LocalError):
    """The quantised model breaks a tolerance; nothing was written. `kubeserve package` exits 3."""

    def __init__(self, message: str, report: str) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class QuantSettings:
    mode: str
    calibration: Path | None = None
    calibration_rows: int = DEFAULT_CALIBRATION_ROWS
    max_abs_diff: float = quant_report.DEFAULT_MAX_ABS_DIFF
    min_top1_agreement: float = quant_report.DEFAULT_MIN_TOP1_AGREEMENT
    bench_runs: int = DEFAULT_BENCH_RUNS
    bench_threads: int = 1


def package_quantized(
    model: TorchModel,
    example: Any,
    out_dir: Path,
    *,
    opset: int,
    tolerance: float,
    force: bool,
    settings: QuantSettings,
) -> Packaged:
    target = out_dir / MODEL_FILE
    if target.exists() and not force:
        raise LocalError(f"{target} exists; pass --force to overwrite it")
    rows, source = calibration_rows(settings, example)
    with tempfile.TemporaryDirectory(prefix="kubeserve-quant-") as tmp:
        work = Path(tmp)
        float_path = work / "float.onnx"
        _export(model, example, float_path, opset)
        checks, _ = verify(model.module, example, float_path, tolerance=tolerance)
        quantized = work / MODEL_FILE
        quantize(settings.mode, float_path, quantized, rows, work)
        report = measure(settings, float_path, quantized, rows, example.numpy(), source)
        # The artifact must load and answer like any other: batch sizes, signature.
        _, signature = _loads(quantized, example)
        problems = report.problems(
            max_abs_diff=settings.max_abs_diff, min_top1_agreement=settings.min_top1_agreement
        )
        text = "\n".join(report.lines())
        if problems and not force:
            raise QuantizationRejected(
                f"the {settings.mode}-quantized model breaks a tolerance "
                f"({'; '.join(problems)}); nothing was written (--force writes it anyway)",
                text,
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        partial = out_dir / f".{MODEL_FILE}.partial"
        shutil.copyfile(quantized, partial)
        os.replace(partial, target)
    checks = (
        *checks,
        f"the {settings.mode}-quantized model loads in ONNX Runtime and answers at batch sizes "
        f"{int(example.shape[0])} and {int(example.shape[0]) + 2}",
    )
    details = (signature, *report.lines())
    if problems:
        details += (f"WRITTEN WITH --force although: {'; '.join(problems)}",)
    return Packaged(
        runtime="onnxruntime",
        files=(target,),
        model_uri=out_dir,
        model_name=None,
        checks=checks,
        details=details,
    )


def calibration_rows(settings: QuantSettings, example: Any) -> tuple[Any, str]:
    """Rows to calibrate (static) and to compare on (both): a file, or random ones (warned)."""
    import numpy as np

    want = tuple(example.shape[1:])
    dtype = example.numpy().dtype
    if settings.calibration is not None:
        array = _read_calibration(settings.calibration)
        if tuple(array.shape[1:]) != want:
            raise LocalError(
                f"--calibration {settings.calibration}: rows of shape {list(array.shape[1:])}, "
                f"the model takes {list(want)}"
            )
        if array.shape[0] == 0:
            raise LocalError(f"--calibration {settings.calibration}: holds no rows")
        return array.astype(dtype, copy=False), (
            f"{array.shape[0]} rows from {settings.calibration}"
        )
    print(
        "kubeserve package: warning: no --calibration file: calibrating and comparing on "
        f"{settings.calibration_rows} random rows shaped like --input-shape. Random inputs "
        "calibrate poorly (their ranges are not your data's) and the accuracy figures say "
        "little about real inputs; pass --calibration rows.npy (a few hundred real inputs).",
        file=sys.stderr,
    )
    rows = random_like(example, batch=settings.calibration_rows).numpy()
    return np.ascontiguousarray(rows), (
        f"{settings.calibration_rows} RANDOM rows (no --calibration: a weak test of accuracy)"
    )


def _read_calibration(path: Path) -> Any:
    import numpy as np

    if not path.is_file():
        raise LocalError(f"--calibration {path}: no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise LocalError(
            f"--calibration {path}: not a .npy or .npz file ({first_line(exc)})"
        ) from exc
    if isinstance(loaded, np.ndarray):
        array = loaded
    else:
        with loaded:
            names = list(loaded.files)
            if len(names) == 1:
                array = loaded[names[0]]
            elif "input" in names:
                array = loaded["input"]
            else:
                raise LocalError(
                    f"--calibration {path}: holds {', '.join(names)}; keep one array, or "
                    "name the model's input 'input'"
                )
    if array.ndim < 1:
        raise LocalError(f"--calibration {path}: needs a leading row dimension")
    return array


def quantize(mode: str, source: Path, target: Path, rows: Any, work: Path) -> None:
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # ORT's recommended pre-processing (shape inference, graph clean-up) before quantising.
    prepared = work / "prepared.onnx"
    try:
        # The quantiser logs a line per node it skips and warns about pre-processing.
        with quiet(logging.WARNING):
            quant_pre_process(str(source), str(prepared))
    except Exception:
        prepared = source  # pre-processing is an optimisation; quantise the export as it is

    input_name = _input_name(prepared)

    class Rows(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches = iter(
                [{input_name: rows[i : i + 16]} for i in range(0, rows.shape[0], 16)]
            )

        def get_next(self) -> dict[str, Any] | None:
            return next(self._batches, None)

    try:
        with quiet(logging.WARNING):
            if mode == "dynamic":
                quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8)
            else:
                quantize_static(
                    str(prepared),
                    str(target),
                    Rows(),
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                )
    except Exception as exc:
        raise LocalError(
            f"onnxruntime quantize_{mode} failed: {type(exc).__name__}: {first_line(exc)}"
        ) from exc


def measure(
    settings: QuantSettings,
    float_path: Path,
    quantized_path: Path,
    rows: Any,
    example: Any,
    source: str,
) -> quant_report.QuantReport:
    reference = _session(float_path, settings.bench_threads)
    candidate = _session(quantized_path, settings.bench_threads)
    name = reference.get_inputs()[0].name
    ref_out, q_out = [], []
    try:
        for start in range(0, rows.shape[0], EVAL_CHUNK):
            chunk = rows[start : start + EVAL_CHUNK]
            ref_out.append(reference.run(None, {name: chunk})[0])
            q_out.append(candidate.run(None, {name: chunk})[0])
    except Exception as exc:
        raise LocalError(f"the quantized model failed to run: {first_line(exc)}") from exc
    accuracy = quant_report.accuracy(ref_out, q_out)
    float_s, quant_s = [], []
    feeds = {name: example}
    for _ in range(WARMUP_RUNS):
        reference.run(None, feeds)
        candidate.run(None, feeds)
    # Interleaved, so a noisy neighbour slows both alike.
    for _ in range(settings.bench_runs):
        began = time.perf_counter()
        reference.run(None, feeds)
        middle = time.perf_counter()
        candidate.run(None, feeds)
        quant_s.append(time.perf_counter() - middle)
        float_s.append(middle - began)
    speed = quant_report.Speed(
        float_ms=quant_report.median_ms(float_s),
        quantized_ms=quant_report.median_ms(quant_s),
        runs=settings.bench_runs,
        threads=settings.bench_threads,
        batch=int(example.shape[0]),
    )
    return quant_report.QuantReport(
        mode=settings.mode,
        calibration=source,
        accuracy=accuracy,
        speed=speed,
        float_bytes=float_path.stat().st_size,
        quantized_bytes=quantized_path.stat().st_size,
    )


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise LocalError(f"ONNX Runtime cannot load {path.name}: {first_line(exc)}") from exc


def _loads(path: Path, example: Any) -> tuple[Any, str]:
    from .torch_onnx import _signature

    session = _session(path, 1)
    name = session.get_inputs()[0].name
    for batch in (int(example.shape[0]), int(example.shape[0]) + 2):
        try:
            session.run(None, {name: random_like(example, batch=batch).numpy()})
        except Exception as exc:
            raise LocalError(
                f"the quantized model fails at batch size {batch}: {first_line(exc)}"
            ) from exc
    return session, _signature(session)


def _input_name(path: Path) -> str:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    inputs = [value.name for value in graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise LocalError(f"quantization supports one model input; the graph has {inputs}")
    return str(inputs[0])
