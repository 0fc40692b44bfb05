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
    http,
    max_diff,
    run_cli,
    run_python,
    serving,
    torch_reference,
    write_md,
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


# --- --quantize (ONNX Runtime int8) -------------------------------------------------------

ROWS = [[0.5, -1.0, 2.0, 0.25], [0.0, 0.0, 0.0, 0.0], [3.0, 1.0, -2.0, 1.5]]
# int8 moves this model's logits by about 1e-2 on rows like the calibration rows (measured
# 0.011-0.013), more on rows outside their range.
QUANT_TOLERANCE = 0.25


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calibration") / "rows.npy"
    np.save(path, np.random.default_rng(0).normal(size=(96, 4)).astype(np.float32))
    return path


@pytest.fixture(scope="module", params=["dynamic", "static"])
def quantized(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, calibration: Path
) -> tuple[str, Path, str, str]:
    mode: str = request.param
    out = tmp_path_factory.mktemp(f"quant-{mode}") / "tiny"
    extra = ["--calibration", str(calibration)] if mode == "static" else []
    status, stdout, stderr = package(
        TINY_MODEL, "--input-shape", "1,4", "--format", "onnx", "--quantize", mode,
        "--bench-runs", "20", "-o", str(out), *extra,
    )  # fmt: skip
    assert status == 0, stderr
    return mode, out, stdout, stderr


def test_quantized_model_is_int8_and_the_real_onnx_server_answers_with_it(
    quantized: tuple[str, Path, str, str],
) -> None:
    mode, out, _stdout, _stderr = quantized
    import onnx

    ops = {node.op_type for node in onnx.load(str(out / "model.onnx")).graph.node}
    if mode == "dynamic":
        assert "MatMulInteger" in ops, ops
    else:  # QDQ: float Gemm between QuantizeLinear/DequantizeLinear pairs, no QOperator ops
        assert {"QuantizeLinear", "DequantizeLinear", "Gemm"} <= ops, ops
        assert not ops & {"QGemm", "QLinearMatMul"}, ops
    md = write_md(out.parent / "md.yaml", "tiny", "onnxruntime", str(out))
    with serving(md, tmp=out.parent) as served:
        status, body = http(
            "POST",
            f"{served.url}/infer",
            {"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32", "data": ROWS}]},
        )
    assert status == 200, body
    [output] = body["outputs"]
    assert output["shape"] == [3, 3]
    answer = np.asarray(output["data"]).reshape(3, 3)
    # The server answers exactly what the artifact computes...
    artifact = run_onnx(out / "model.onnx", torch.tensor(ROWS))
    assert np.max(np.abs(answer - artifact)) <= TOLERANCE
    # ...which is near torch's float answer. ROWS[2] (3.0, -2.0) lies at the edge of the
    # N(0, 1) calibration rows: static quantisation clips it a little (measured 0.107).
    assert max_diff(answer.tolist(), torch_reference(ROWS)) <= QUANT_TOLERANCE


def test_quantize_report_gives_accuracy_speed_and_calibration_source(
    quantized: tuple[str, Path, str, str],
) -> None:
    mode, out, stdout, stderr = quantized
    assert f"wrote {out / 'model.onnx'}" in stdout
    assert f"quantization: {mode}" in stdout
    assert "accuracy vs the float model (both in onnxruntime, " in stdout
    assert "top-1 agreement" in stdout
    assert "speed: median of 20 session.run calls at batch 1, 1 intra-op thread(s)" in stdout
    assert "checked: ONNX Runtime matches torch at batch size 1" in stdout
    if mode == "static":
        assert "calibration: 96 rows from" in stdout
        assert "warning" not in stderr
    else:
        assert "RANDOM rows" in stdout
        assert "warning: no --calibration file" in stderr  # random rows calibrate poorly


def test_a_quantized_model_that_breaks_the_tolerance_is_refused_and_not_written(
    tmp_path: Path, calibration: Path
) -> None:
    out = tmp_path / "out"
    args = [
        TINY_MODEL, "--input-shape", "1,4", "--format", "onnx", "--quantize", "dynamic",
        "--calibration", str(calibration), "--max-abs-diff", "1e-9", "--bench-runs", "5",
        "-o", str(out),
    ]  # fmt: skip
    status, stdout, stderr = package(*args)
    assert status == 3, stderr
    assert not out.exists()
    assert "accuracy vs the float model" in stdout  # the figures behind the refusal
    [line] = error_lines(stderr)
    assert line.startswith("kubeserve package: error: the dynamic-quantized model breaks")
    assert "> --max-abs-diff 1e-09" in line and "nothing was written" in line

    status, stdout, stderr = package(*args, "--force")
    assert status == 0, stderr
    assert (out / "model.onnx").is_file()
    assert "WRITTEN WITH --force although: max abs diff" in stdout


def test_quantize_flags_are_checked_before_any_work(tmp_path: Path) -> None:
    cases = [
        (["--format", "mar", "--quantize", "dynamic"], "--quantize is for --format onnx"),
        (["--format", "onnx", "--calibration", "x.npy"], "--calibration is for --quantize"),
        (
            ["--format", "onnx", "--quantize", "static", "--min-top1-agreement", "98"],
            "--min-top1-agreement is a fraction",
        ),
        (["--format", "onnx", "--torchscript", "trace"], "--torchscript is for --format mar"),
    ]
    for args, message in cases:
        status, _, stderr = package(TINY_MODEL, "--input-shape", "1,4", *args, "-o", str(tmp_path))
        assert status == 1, args
        assert message in stderr, stderr
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((4, 5), dtype=np.float32))
    status, _, stderr = package(
        TINY_MODEL, "--input-shape", "1,4", "--format", "onnx", "--quantize", "static",
        "--calibration", str(bad), "-o", str(tmp_path / "o"),
    )  # fmt: skip
    assert status == 1
    assert "rows of shape [5], the model takes [4]" in stderr


# --- --torchscript trace|script (TorchServe) ------------------------------------------------


@pytest.mark.parametrize("mode", ["trace", "script"])
def test_mar_holds_the_chosen_torchscript_and_it_matches_eager(tmp_path: Path, mode: str) -> None:
    out = tmp_path / "store"
    status, stdout, stderr = package(
        TINY_MODEL, "--input-shape", "2,4", "--format", "mar", "--name", "tiny",
        "--torchscript", mode, "-o", str(out),
    )  # fmt: skip
    assert status == 0, stderr
    assert f"checked: TorchScript by torch.jit.{mode}" in stdout
    assert "matches the model at batch size 4" in stdout  # not only the traced batch size
    with zipfile.ZipFile(out / "tiny.mar") as archive:
        manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))
        assert "modelFile" not in manifest["model"]  # no Python model class in the archive
        loaded = torch.jit.load(io.BytesIO(archive.read(manifest["model"]["serializedFile"])))
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.allclose(loaded(x), reference()(x), atol=TOLERANCE)


BRANCHING_MODEL = f"{Path(__file__).resolve().with_name('branching_model.py')}:build"


def test_a_trace_that_freezes_a_branch_is_caught_and_script_keeps_it(tmp_path: Path) -> None:
    args = [BRANCHING_MODEL, "--input-shape", "2,4", "--format", "mar", "--name", "b"]
    status, _, stderr = package(*args, "--torchscript", "trace", "-o", str(tmp_path / "t"))
    assert status == 1
    [line] = error_lines(stderr)
    assert "b.mar's model differs from the model by" in line and "at batch size 4" in line
    assert not (tmp_path / "t" / "b.mar").exists()  # a failed check leaves no archive
    status, stdout, stderr = package(*args, "--torchscript", "script", "-o", str(tmp_path / "s"))
    assert status == 0, stderr
    assert "checked: TorchScript by torch.jit.script" in stdout
