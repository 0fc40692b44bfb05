"""What quantisation cost and bought: accuracy against the float model, speed, size, verdict.

Pure numpy (no onnxruntime, no torch), so the arithmetic and the refusal rule are unit-tested
on their own (tests/unit/test_quant_report.py); quantize.py measures and fills it in.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Defaults of --max-abs-diff and --min-top1-agreement. Int8 weights move a classifier's logits
# by about 1e-3 to 1e-2 of their range; 0.1 absolute catches a broken model (wrong scales,
# saturated activations) without refusing ordinary int8 error. Top-1 is what a classifier's
# user sees: 98% allows a row in 50 to flip between near-tied classes.
DEFAULT_MAX_ABS_DIFF = 0.1
DEFAULT_MIN_TOP1_AGREEMENT = 0.98


@dataclass(frozen=True)
class Accuracy:
    rows: int
    max_abs_diff: float
    top1_agreement: float | None  # None: the output is not [N, classes]


@dataclass(frozen=True)
class Speed:
    float_ms: float  # median of `runs` session.run calls
    quantized_ms: float
    runs: int
    threads: int
    batch: int

    @property
    def speedup(self) -> float:
        return self.float_ms / self.quantized_ms if self.quantized_ms > 0 else float("inf")


@dataclass(frozen=True)
class QuantReport:
    mode: str  # dynamic | static
    calibration: str  # where the calibration / evaluation rows came from
    accuracy: Accuracy
    speed: Speed
    float_bytes: int
    quantized_bytes: int

    def problems(self, *, max_abs_diff: float, min_top1_agreement: float) -> list[str]:
        """Each tolerance the quantised model breaks, in words; empty when it passes."""
        found = []
        if self.accuracy.max_abs_diff > max_abs_diff:
            found.append(
                f"max abs diff {self.accuracy.max_abs_diff:.3g} > --max-abs-diff {max_abs_diff:g}"
            )
        top1 = self.accuracy.top1_agreement
        if top1 is not None and top1 < min_top1_agreement:
            found.append(
                f"top-1 agreement {top1:.1%} < --min-top1-agreement {min_top1_agreement:g}"
            )
        return found

    def lines(self) -> list[str]:
        acc, speed = self.accuracy, self.speed
        top1 = (
            f"{acc.top1_agreement:.1%}"
            if acc.top1_agreement is not None
            else "n/a (the output is not [N, classes])"
        )
        return [
            f"quantization: {self.mode}, "
            + (
                "int8 weights, activations quantised at run time"
                if self.mode == "dynamic"
                else "int8 weights and activations (QDQ), activation ranges from calibration"
            ),
            f"calibration: {self.calibration}",
            f"accuracy vs the float model (both in onnxruntime, {acc.rows} rows): "
            f"max abs diff {acc.max_abs_diff:.3g}, top-1 agreement {top1}",
            f"speed: median of {speed.runs} session.run calls at batch {speed.batch}, "
            f"{speed.threads} intra-op thread(s): float {speed.float_ms:.4g} ms, "
            f"quantized {speed.quantized_ms:.4g} ms ({speed.speedup:.2f}x)",
            f"size: {self.float_bytes:,} -> {self.quantized_bytes:,} bytes",
        ]


def accuracy(reference: Sequence[Any], quantized: Sequence[Any]) -> Accuracy:
    """Compare the float model's outputs (one array per evaluated batch) with the quantised."""
    import numpy as np

    if len(reference) != len(quantized) or not reference:
        raise ValueError("accuracy needs one quantised output per reference output")
    worst = 0.0
    agree = rows = 0
    classifier = True
    for ref, out in zip(reference, quantized, strict=True):
        ref = np.asarray(ref, dtype=np.float64)
        out = np.asarray(out, dtype=np.float64)
        if ref.shape != out.shape:
            raise ValueError(f"output shapes differ: {ref.shape} vs {out.shape}")
        rows += ref.shape[0] if ref.ndim else 1
        if ref.size:
            worst = max(worst, float(np.max(np.abs(ref - out))))
        if ref.ndim == 2 and ref.shape[1] >= 2:
            agree += int(np.sum(np.argmax(ref, axis=1) == np.argmax(out, axis=1)))
        else:
            classifier = False
    return Accuracy(rows, worst, agree / rows if classifier and rows else None)


def median_ms(seconds: Sequence[float]) -> float:
    return statistics.median(seconds) * 1000.0
