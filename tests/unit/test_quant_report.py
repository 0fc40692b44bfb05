"""`kubeserve package --quantize`: the accuracy arithmetic, the refusal rule and the report."""

from __future__ import annotations

import numpy as np
import pytest

from kubeserve.local.package.quant_report import (
    DEFAULT_MAX_ABS_DIFF,
    DEFAULT_MIN_TOP1_AGREEMENT,
    Accuracy,
    QuantReport,
    Speed,
    accuracy,
    median_ms,
)


def test_accuracy_takes_the_worst_difference_and_counts_argmax_agreement() -> None:
    reference = [np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]]), np.array([[0.0, 0.0, 5.0]])]
    quantized = [np.array([[1.0, 1.9, 0.0], [3.0, 0.0, 3.5]]), np.array([[0.0, 0.0, 5.25]])]
    found = accuracy(reference, quantized)
    assert found.rows == 3
    assert found.max_abs_diff == pytest.approx(3.5)
    assert found.top1_agreement == pytest.approx(2 / 3)  # row 2's argmax moved 0 -> 2


def test_outputs_that_are_not_n_by_classes_have_no_top1() -> None:
    found = accuracy([np.zeros((4, 2, 2))], [np.full((4, 2, 2), 0.5)])
    assert found.top1_agreement is None
    assert found.max_abs_diff == pytest.approx(0.5)


def test_mismatched_outputs_are_an_error_not_a_number() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        accuracy([np.zeros((2, 3))], [np.zeros((2, 4))])
    with pytest.raises(ValueError):
        accuracy([], [])


def report(diff: float, top1: float | None, float_ms: float = 2.0) -> QuantReport:
    return QuantReport(
        mode="static",
        calibration="64 rows from rows.npy",
        accuracy=Accuracy(rows=64, max_abs_diff=diff, top1_agreement=top1),
        speed=Speed(float_ms=float_ms, quantized_ms=1.0, runs=50, threads=1, batch=8),
        float_bytes=4_000_000,
        quantized_bytes=1_000_000,
    )


def test_a_model_within_both_tolerances_passes() -> None:
    assert report(0.01, 1.0).problems(max_abs_diff=0.1, min_top1_agreement=0.98) == []
    # The bounds themselves pass: a tolerance is "at most" / "at least".
    assert report(0.1, 0.98).problems(max_abs_diff=0.1, min_top1_agreement=0.98) == []


def test_each_broken_tolerance_is_named() -> None:
    problems = report(0.5, 0.9).problems(max_abs_diff=0.1, min_top1_agreement=0.98)
    assert problems == [
        "max abs diff 0.5 > --max-abs-diff 0.1",
        "top-1 agreement 90.0% < --min-top1-agreement 0.98",
    ]


def test_no_top1_means_only_the_difference_is_judged() -> None:
    assert report(0.05, None).problems(max_abs_diff=0.1, min_top1_agreement=1.0) == []


def test_defaults_are_sane_for_int8() -> None:
    assert 0 < DEFAULT_MAX_ABS_DIFF <= 0.5
    assert 0.9 <= DEFAULT_MIN_TOP1_AGREEMENT < 1


def test_report_lines_give_the_figures() -> None:
    text = "\n".join(report(0.0123, 0.984, float_ms=3.0).lines())
    assert "quantization: static" in text
    assert "calibration: 64 rows from rows.npy" in text
    assert "max abs diff 0.0123, top-1 agreement 98.4%" in text
    assert "float 3 ms, quantized 1 ms (3.00x)" in text
    assert "4,000,000 -> 1,000,000 bytes" in text
    assert "n/a (the output is not [N, classes])" in "\n".join(report(0.0, None).lines())


def test_median_is_in_milliseconds() -> None:
    assert median_ms([0.001, 0.003, 0.002]) == pytest.approx(2.0)
