"""Tiny models with known answers, and packaging them with `kubeserve package`.

The factories below are given to `kubeserve package path/to/models.py:FACTORY`, which imports
this file itself; torch and keras are imported inside the factories only.

- ``linear``: y = x . [1, 2, 3, 4] + 0.5 (a torch Linear(4, 1)), for ONNX Runtime and TorchServe.
- ``half_plus_two``: y = 0.5 x + 2 (a Keras Dense(1)), for TF Serving.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

LINEAR_WEIGHTS = (1.0, 2.0, 3.0, 4.0)
LINEAR_BIAS = 0.5
# Two rows, batch dimension first, and their answers.
LINEAR_INPUT = [[1.0, 1.0, 1.0, 1.0], [0.5, -1.0, 2.0, 0.0]]
LINEAR_OUTPUT = [
    sum(w * x for w, x in zip(LINEAR_WEIGHTS, row, strict=True)) + LINEAR_BIAS
    for row in LINEAR_INPUT
]
HALF_PLUS_TWO_INPUT = [[1.0], [2.0], [5.0]]
HALF_PLUS_TWO_OUTPUT = [0.5 * row[0] + 2.0 for row in HALF_PLUS_TWO_INPUT]


def linear() -> Any:
    import torch

    model = torch.nn.Linear(4, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([LINEAR_WEIGHTS]))
        model.bias.fill_(LINEAR_BIAS)
    return model.eval()


def half_plus_two() -> Any:
    import keras
    import numpy as np

    inputs = keras.Input(shape=(1,), name="x")
    dense = keras.layers.Dense(1, name="y")
    model = keras.Model(inputs, dense(inputs))
    dense.set_weights([np.array([[0.5]], "float32"), np.array([2.0], "float32")])
    return model


def package(
    factory: str, fmt: str, out: Path, *, name: str | None = None, input_shape: str
) -> Path:
    """`kubeserve package models.py:FACTORY --format FMT -o OUT`; returns OUT.

    Layouts (from `kubeserve package --help`): onnx -> OUT/model.onnx; mar -> OUT/NAME.mar;
    savedmodel -> OUT/NAME/1/saved_model.pb.
    """
    args = [
        sys.executable,
        "-m",
        "kubeserve",
        "package",
        f"{Path(__file__).resolve()}:{factory}",
        "--format",
        fmt,
        "-o",
        str(out),
        "--input-shape",
        input_shape,
        "--force",
    ]
    if name:
        args += ["--name", name]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, env=_package_env())
    if result.returncode != 0:
        raise AssertionError(
            f"kubeserve package failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return out


def _package_env() -> dict[str, str]:
    import os
    import tempfile

    home = Path(tempfile.gettempdir()) / "kubeserve-e2e-home"
    home.mkdir(exist_ok=True)
    # Keras writes ~/.keras unless KERAS_HOME is set; onnxruntime phones home unless told not to.
    return {**os.environ, "KERAS_HOME": str(home / "keras"), "ORT_DISABLE_TELEMETRY": "1"}


def build_all(workdir: Path) -> dict[str, Path]:
    """Every artifact the suite serves, in the directory layout of the models PVC."""
    onnx = package("linear", "onnx", workdir / "onnx", input_shape="1,4")
    assert (onnx / "model.onnx").is_file()
    torch_dir = package("linear", "mar", workdir / "torch", name="linear", input_shape="1,4")
    assert (torch_dir / "linear.mar").is_file()
    tf_dir = package(
        "half_plus_two", "savedmodel", workdir / "tf", name="half_plus_two", input_shape="1,1"
    )
    assert (tf_dir / "half_plus_two" / "1" / "saved_model.pb").is_file()
    return {"onnx": onnx, "torch": torch_dir, "tf": tf_dir}
