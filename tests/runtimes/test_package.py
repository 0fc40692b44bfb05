"""`kubeserve package`: each artifact is written, loads back, and answers like the original.

The PyTorch cases run the command in-process (torch is imported once for the module); the
Keras case and one failure case run it as a real subprocess, so TensorFlow stays out of this
process and the exit status and stderr are the real ones.
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # before anything imports onnxruntime

import contextlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from fixtures_local import (
    KERAS_MODEL,
    TINY_MODEL,
    TINY_MODEL_FILE,
    error_lines,
    run_cli,
    run_python,
)

from kubeserve.cli import main

pytestmark = [
    pytest.mark.runtimes,
    # TorchScript is what TorchServe loads; torch 2.13 warns on every use of it.
    pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning"),
]

TOLERANCE = 1e-5


def package(*args: str) -> tuple[int, str, str]:
    """`kubeserve package ARGS` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["package", *args])
    return status, out.getvalue(), err.getvalue()


def reference() -> torch.nn.Module:
    import importlib.util

    spec = importlib.util.spec_from_file_location("_tiny_for_package", TINY_MODEL_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model: torch.nn.Module = module.build()
    return model


def run_onnx(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    result: np.ndarray = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return result


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("onnx") / "tiny"
    status, stdout, stderr = package(
        TINY_MODEL,
        "--input-shape",
        "1,4",
        "--format",
        "onnx",
        "-o",
        str(out),
        "--tolerance",
        str(TOLERANCE),
    )
    assert status == 0, stderr
    return out, stdout


def test_factory_to_onnx_matches_torch_at_any_batch_size(onnx_dir: tuple[Path, str]) -> None:
    out, _stdout = onnx_dir
    model = reference()
    for batch in (1, 7):  # 7: not the example's batch size, so the batch axis must be dynamic
        x = torch.randn(batch, 4, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model(x).numpy()
        actual = run_onnx(out / "model.onnx", x)
        assert actual.shape == (batch, 3)
        assert np.max(np.abs(actual - expected)) <= TOLERANCE


def test_onnx_graph_has_a_dynamic_batch_axis_and_report_names_the_runtime(
    onnx_dir: tuple[Path, str],
) -> None:
    out, stdout = onnx_dir
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    [graph_input] = session.get_inputs()
    assert graph_input.name == "input"
    assert isinstance(graph_input.shape[0], str)  # symbolic, e.g. "batch"
    assert graph_input.shape[1] == 4
    assert f"wrote {out / 'model.onnx'}" in stdout
    assert "serve it with runtime: onnxruntime" in stdout
    assert f"uri: {out.resolve().as_uri()}" in stdout


def test_torchscript_file_to_onnx(tmp_path: Path) -> None:
    scripted = torch.jit.script(reference())
    scripted.save(str(tmp_path / "tiny.pt"))
    example = torch.randn(2, 4)
    torch.save(example, tmp_path / "example.pt")
    status, _stdout, stderr = package(
        str(tmp_path / "tiny.pt"),
        "--example-input",
        str(tmp_path / "example.pt"),
        "--format",
        "onnx",
        "-o",
        str(tmp_path / "out"),
        "--tolerance",
        str(TOLERANCE),
    )
    assert status == 0, stderr
    x = torch.randn(5, 4)
    with torch.no_grad():
        expected = reference()(x).numpy()
    assert np.max(np.abs(run_onnx(tmp_path / "out" / "model.onnx", x) - expected)) <= TOLERANCE


def test_mar_is_written_and_loads_back(tmp_path: Path) -> None:
    out = tmp_path / "store"
    status, stdout, stderr = package(
        TINY_MODEL, "--input-shape", "2,4", "--format", "mar", "--name", "tiny", "-o", str(out)
    )
    assert status == 0, stderr
    mar = out / "tiny.mar"
    assert f"wrote {mar}" in stdout
    assert "serve it with runtime: torchserve" in stdout
    assert "name: tiny" in stdout
    with zipfile.ZipFile(mar) as archive:
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
        assert manifest["model"]["modelName"] == "tiny"
        assert manifest["model"]["modelVersion"] == "1.0"
        assert manifest["model"]["handler"] == "tensor_handler.py"
        serialized = archive.read(manifest["model"]["serializedFile"])
        assert "tensor_handler.py" in archive.namelist()
    loaded = torch.jit.load(io.BytesIO(serialized))
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.allclose(loaded(x), reference()(x), atol=TOLERANCE)


def test_existing_artifact_needs_force(onnx_dir: tuple[Path, str]) -> None:
    out, _ = onnx_dir
    status, _, stderr = package(
        TINY_MODEL, "--input-shape", "1,4", "--format", "onnx", "-o", str(out)
    )
    assert status == 1
    assert error_lines(stderr) == [
        f"kubeserve package: error: {out / 'model.onnx'} exists; pass --force to overwrite it"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([f"{TINY_MODEL_FILE}:nope", "--input-shape", "1,4"], "has no attribute 'nope'"),
        (
            ["no_such_module_kubeserve:build", "--input-shape", "1,4"],
            "cannot import no_such_module_kubeserve",
        ),
        ([TINY_MODEL, "--input-shape", "1,x"], "--input-shape '1,x': expected comma-separated"),
        ([TINY_MODEL, "--input-shape", "1,5"], "cannot run on the example input (shape [1, 5]"),
        ([TINY_MODEL], "an example input is needed"),
        ([TINY_MODEL, "--input-shape", "1,4", "--input-dtype", "float8"], "--input-dtype"),
        (["missing.pt", "--input-shape", "1,4"], "missing.pt: no such file"),
    ],
    ids=[
        "missing-factory",
        "missing-module",
        "bad-shape",
        "wrong-shape",
        "no-example",
        "bad-dtype",
        "missing-file",
    ],
)
def test_bad_input_fails_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    status, _stdout, stderr = package(*args, "--format", "onnx", "-o", str(tmp_path / "out"))
    assert status == 1
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("kubeserve package: error: ")
    assert message in lines[0]
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_bad_input_exit_status_of_the_real_command(tmp_path: Path) -> None:
    done = run_cli(
        "package",
        TINY_MODEL,
        "--input-shape",
        "1,x",
        "--format",
        "mar",
        "-o",
        str(tmp_path / "out"),
        tmp=tmp_path,
    )
    assert done.returncode == 1
    assert error_lines(done.stderr) == [
        "kubeserve package: error: --input-shape '1,x': expected comma-separated positive "
        "integers such as 1,4"
    ]


def test_keras_factory_to_savedmodel_in_tf_serving_layout(tmp_path: Path) -> None:
    done = run_cli(
        "package",
        KERAS_MODEL,
        "--format",
        "savedmodel",
        "--name",
        "iris",
        "--input-shape",
        "2,4",
        "-o",
        str(tmp_path / "models"),
        tmp=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    version_dir = tmp_path / "models" / "iris" / "1"
    assert (version_dir / "saved_model.pb").is_file()
    assert (version_dir / "variables").is_dir()
    assert "serve it with runtime: tfserving" in done.stdout
    assert f"uri: {(tmp_path / 'models' / 'iris').as_uri()}" in done.stdout
    assert (
        "signature serving_default: inputs (features: float32 [None, 4]) -> "
        "outputs (output_0: float32 [None, 3])"
    ) in done.stdout
    # The command loaded the SavedModel back with TensorFlow to print this; test_tensorflow
    # loads it again independently.
    assert "checked: tf.saved_model.load reads" in done.stdout
    assert "checked: the SavedModel matches keras on shape [2, 4]" in done.stdout


def test_savedmodel_refuses_a_torch_model(tmp_path: Path) -> None:
    status, _, stderr = package("model.pt", "--format", "savedmodel", "-o", str(tmp_path))
    assert status == 1
    assert "--format savedmodel needs a Keras model" in stderr


def test_the_cli_does_not_import_heavy_frameworks_until_a_command_runs(tmp_path: Path) -> None:
    done = run_python(
        "import json, sys\n"
        "from kubeserve.cli import _parser\n"
        "_parser().parse_args(['package', 'm:f', '--format', 'onnx', '-o', 'x'])\n"
        "_parser().parse_args(['serve', '-f', 'md.yaml'])\n"
        "heavy = ('torch', 'tensorflow', 'keras', 'onnxruntime', 'onnx', 'aiohttp')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n",
        tmp=tmp_path,
    )
    assert done == []
