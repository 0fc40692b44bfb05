"""Keras -> a SavedModel in TF Serving's DIR/<name>/<version>/ layout, loaded back with
TensorFlow to check it and to show the serving signature clients must use, with TF Serving
warm-up records (tf_warmup) so a new version is warm before it is marked AVAILABLE."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LocalError, first_line
from ..factory import call_factory, is_factory_reference
from .result import Packaged
from .tf_warmup import replay, warmup_inputs, write_warmup

SIGNATURE = "serving_default"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int | None, ...]

    def __str__(self) -> str:
        dims = ", ".join("None" if dim is None else str(dim) for dim in self.shape)
        return f"{self.name}: {self.dtype} [{dims}]"


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    def describe(self) -> str:
        return (
            f"signature {SIGNATURE}: inputs ({'; '.join(map(str, self.inputs))}) -> "
            f"outputs ({'; '.join(map(str, self.outputs))})"
        )


def load_model(reference: str) -> Any:
    _quiet_tensorflow()
    import keras

    if is_factory_reference(reference):
        model = call_factory(reference)
        if not isinstance(model, keras.Model):
            raise LocalError(
                f"{reference}: the factory returned {type(model).__name__}, not a keras.Model"
            )
        return model
    path = Path(reference)
    if not path.is_file():
        raise LocalError(f"{reference}: no such file, and not a module:factory reference")
    if path.suffix not in (".keras", ".h5"):
        raise LocalError(f"{reference}: expected a .keras (or legacy .h5) file")
    try:
        return keras.models.load_model(str(path), compile=False)
    except Exception as exc:
        raise LocalError(f"{reference}: keras cannot load it: {first_line(exc)}") from exc


def package_savedmodel(
    model: Any,
    out_dir: Path,
    *,
    name: str,
    version: int,
    example_shape: Sequence[int] | None,
    example_dtype: str,
    tolerance: float,
    force: bool,
) -> Packaged:
    base = out_dir / name
    target = base / str(version)
    if target.exists():
        if not force:
            raise LocalError(f"{target} exists; pass --force to overwrite it")
        shutil.rmtree(target)
    base.mkdir(parents=True, exist_ok=True)
    try:
        model.export(str(target), format="tf_saved_model", verbose=False)
    except Exception as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise LocalError(f"keras export failed: {type(exc).__name__}: {first_line(exc)}") from exc
    example = _example(example_shape, example_dtype)
    signature, function, checks = verify(target, model, example, tolerance)
    files = [target / "saved_model.pb", target / "variables"]
    details = [signature.describe()]
    inputs = warmup_inputs(signature, example)
    if inputs is None:
        details.append(
            "no TF Serving warm-up request: the signature's input shapes are not fully known; "
            "pass --input-shape to write one"
        )
    else:
        warmup = write_warmup(target, SIGNATURE, inputs)
        files.append(warmup)
        checks.append(f"{replay(warmup, function)} warm-up request(s) run on {SIGNATURE}")
    return Packaged(
        runtime="tfserving",
        files=tuple(files),
        model_uri=base,
        model_name=name,
        checks=tuple(checks),
        details=tuple(details),
    )


def _example(shape: Sequence[int] | None, dtype: str) -> Any | None:
    # Seeded: the load-back check and the warm-up request use the same values every run.
    import numpy as np

    if not shape:
        return None
    return np.random.default_rng(0).standard_normal(tuple(shape)).astype(dtype)


def verify(
    path: Path, model: Any, example: Any | None, tolerance: float
) -> tuple[Signature, Any, list[str]]:
    """Load the SavedModel back; returns its signature, the signature function and what the
    check found (with an example: the SavedModel answers as keras does)."""
    import numpy as np
    import tensorflow as tf

    if not (path / "saved_model.pb").is_file():
        raise LocalError(f"{path}: no saved_model.pb after export")
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise LocalError(f"tf.saved_model.load cannot read {path}: {first_line(exc)}") from exc
    if SIGNATURE not in loaded.signatures:
        raise LocalError(f"{path}: no {SIGNATURE} signature (found {list(loaded.signatures)})")
    function = loaded.signatures[SIGNATURE]
    signature = read_signature(function)
    checks = [f"tf.saved_model.load reads {path}"]
    if example is not None:
        if len(signature.inputs) != 1:
            raise LocalError(
                "--input-shape checks single-input models only; this one takes "
                f"{len(signature.inputs)} inputs"
            )
        x = example
        expected = np.asarray(model(x))
        outputs = function(**{signature.inputs[0].name: tf.constant(x)})
        actual = np.asarray(outputs[signature.outputs[0].name])
        if actual.shape != expected.shape:
            raise LocalError(
                f"the SavedModel's output shape {actual.shape} differs from "
                f"keras's {expected.shape}"
            )
        diff = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
        if diff > tolerance:
            raise LocalError(
                f"the SavedModel differs from the keras model by {diff:.3g} "
                f"(> --tolerance {tolerance:g})"
            )
        checks.append(
            f"the SavedModel matches keras on shape {list(x.shape)} (max abs diff {diff:.2g})"
        )
    return signature, function, checks


def read_signature(function: Any) -> Signature:
    _, kwargs = function.structured_input_signature
    inputs = tuple(
        TensorInfo(key, spec.dtype.name, tuple(spec.shape.as_list()))
        for key, spec in sorted(kwargs.items())
    )
    outputs = tuple(
        TensorInfo(key, spec.dtype.name, tuple(spec.shape.as_list()))
        for key, spec in sorted(function.structured_outputs.items())
    )
    return Signature(inputs, outputs)


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ start-up chatter (CPU feature notices, oneDNN) is not the user's concern.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
