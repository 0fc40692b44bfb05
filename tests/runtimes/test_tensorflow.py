"""Keras -> SavedModel in TF Serving's <name>/<version>/ layout, loaded back with TensorFlow;
its warm-up records read back with TensorFlow and parsed with the real TF Serving protos
(tensorflow-serving-api); and TF Serving itself where `tensorflow_model_server` exists (not on
these machines: the kind e2e suite covers it, so TF Serving's own replay of the warm-up records
is checked only there). TensorFlow runs in subprocesses, never in the pytest process.
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # before anything imports onnxruntime

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_local import (
    CLI_TIMEOUT_S,
    KERAS_MODEL,
    cli_env,
    error_lines,
    http,
    max_diff,
    run_cli,
    run_python,
    serving,
    write_md,
)

from kubeserve.local.serve.binaries import find
from kubeserve.local.serve.tfserving import OFFICIAL_IMAGE

pytestmark = [pytest.mark.runtimes, pytest.mark.slow]

NAME = "iris"
VERSION = 3
ROWS = [[0.5, -1.0, 2.0, 0.25], [0.0, 0.0, 0.0, 0.0], [3.0, 1.0, -2.0, 1.5]]
WARMUP = Path("assets.extra") / "tf_serving_warmup_requests"
# Reads the warm-up TFRecord as TF Serving does (one serialized PredictionLog per record),
# parses each with the real proto, and holds its request against the SavedModel's signature.
WARMUP_CHECK = """\
import json, sys
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

version_dir, warmup = sys.argv[1], sys.argv[2]
loaded = tf.saved_model.load(version_dir)
records = []
for raw in tf.data.TFRecordDataset(warmup).as_numpy_iterator():
    log = prediction_log_pb2.PredictionLog()
    log.ParseFromString(raw)
    request = log.predict_log.request
    signature = loaded.signatures[request.model_spec.signature_name]
    _, specs = signature.structured_input_signature
    inputs = {}
    for name, tensor in request.inputs.items():
        shape = tf.TensorShape([d.size for d in tensor.tensor_shape.dim])
        assert shape.is_compatible_with(specs[name].shape), (name, shape, specs[name].shape)
        assert tf.as_dtype(tensor.dtype) == specs[name].dtype, (name, tensor.dtype)
        inputs[name] = tf.constant(tf.make_ndarray(tensor))
    outputs = signature(**inputs)
    records.append({
        "log_type": log.WhichOneof("log_type"),
        "signature": request.model_spec.signature_name,
        "inputs": {n: [tf.as_dtype(t.dtype).name, [d.size for d in t.tensor_shape.dim]]
                   for n, t in request.inputs.items()},
        "signature_inputs": sorted(specs),
        "output_shapes": {k: v.shape.as_list() for k, v in outputs.items()},
    })
print(json.dumps(records))
"""
NO_BINARY = (
    "tensorflow_model_server is not installable on this machine (no apt/pip package; official "
    "image only) — the kind e2e suite covers TF Serving"
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[float]]]:
    """A .keras file (from the fixtures' factory) packaged with `kubeserve package`; returns
    the model base path and keras's own answer for ROWS."""
    tmp = tmp_path_factory.mktemp("tensorflow")
    expected = run_python(
        "import json, sys, numpy as np\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from fixtures_local import build_keras\n"
        "model = build_keras()\n"
        f"model.save({str(tmp / 'iris.keras')!r})\n"
        f"print(json.dumps(np.asarray(model(np.array({ROWS!r}, dtype='float32'))).tolist()))\n",
        tmp=tmp,
    )
    done = run_cli(
        "package",
        str(tmp / "iris.keras"),
        "--format",
        "savedmodel",
        "--name",
        NAME,
        "--model-version",
        str(VERSION),
        "--input-shape",
        "2,4",
        "-o",
        str(tmp / "models"),
        tmp=tmp,
    )
    assert done.returncode == 0, done.stderr
    assert "serve it with runtime: tfserving" in done.stdout
    return tmp / "models" / NAME, expected


def test_savedmodel_is_in_tf_serving_layout(exported: tuple[Path, list[list[float]]]) -> None:
    base, _ = exported
    assert sorted(p.name for p in base.iterdir()) == [str(VERSION)]
    assert (base / str(VERSION) / "saved_model.pb").is_file()
    assert (base / str(VERSION) / "variables" / "variables.index").is_file()


def test_loads_back_with_the_serving_signature_and_keras_answers(
    exported: tuple[Path, list[list[float]]], tmp_path: Path
) -> None:
    base, expected = exported
    loaded = run_python(
        "import json, numpy as np, tensorflow as tf\n"
        f"sig = tf.saved_model.load({str(base / str(VERSION))!r}).signatures['serving_default']\n"
        "_, kwargs = sig.structured_input_signature\n"
        "spec = lambda v: [v.dtype.name, v.shape.as_list()]\n"
        f"out = sig(features=tf.constant(np.array({ROWS!r}, dtype='float32')))\n"
        "print(json.dumps({'inputs': {k: spec(v) for k, v in kwargs.items()},\n"
        "                  'outputs': {k: spec(v) for k, v in sig.structured_outputs.items()},\n"
        "                  'prediction': out['output_0'].numpy().tolist()}))\n",
        tmp=tmp_path,
    )
    assert loaded["inputs"] == {"features": ["float32", [None, 4]]}
    assert loaded["outputs"] == {"output_0": ["float32", [None, 3]]}
    assert max_diff(loaded["prediction"], expected) <= 1e-5


def test_warmup_records_are_prediction_logs_for_the_serving_signature(
    exported: tuple[Path, list[list[float]]], tmp_path: Path
) -> None:
    """The example input of `kubeserve package --input-shape 2,4` becomes one PredictRequest
    for serving_default whose input names, dtypes and shapes are the SavedModel's."""
    base, _ = exported
    records = _warmup_records(base / str(VERSION), tmp_path)
    assert records == [
        {
            "log_type": "predict_log",
            "signature": "serving_default",
            "inputs": {"features": ["float32", [2, 4]]},
            "signature_inputs": ["features"],
            "output_shapes": {"output_0": [2, 3]},
        }
    ]


def test_warmup_without_an_example_uses_one_row(tmp_path: Path) -> None:
    """Without --input-shape the request comes from the signature: batch dimension 1."""
    done = run_cli(
        "package",
        KERAS_MODEL,
        *("--format", "savedmodel", "--name", NAME, "-o", str(tmp_path / "models")),
        tmp=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "checked: 1 warm-up request(s) run on serving_default" in done.stdout
    [record] = _warmup_records(tmp_path / "models" / NAME / "1", tmp_path)
    assert record["inputs"] == {"features": ["float32", [1, 4]]}
    assert record["output_shapes"] == {"output_0": [1, 3]}


def _warmup_records(version_dir: Path, tmp: Path) -> list[dict[str, object]]:
    warmup = version_dir / WARMUP
    assert warmup.is_file(), f"no {WARMUP} in {version_dir}"
    done = subprocess.run(
        [sys.executable, "-c", WARMUP_CHECK, str(version_dir), str(warmup)],
        env=cli_env(tmp),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    records: list[dict[str, object]] = json.loads(done.stdout.strip().splitlines()[-1])
    return records


def test_version_zero_is_refused(tmp_path: Path) -> None:
    done = run_cli(
        "package",
        KERAS_MODEL,
        "--format",
        "savedmodel",
        "--model-version",
        "0",
        "-o",
        str(tmp_path / "models"),
        tmp=tmp_path,
    )
    assert done.returncode == 1
    assert error_lines(done.stderr) == [
        "kubeserve package: error: --model-version must be >= 1 (TF Serving ignores version 0)"
    ]


def test_suggested_image_is_the_one_our_image_builds_on() -> None:
    dockerfile = Path(__file__).resolve().parents[2] / "images" / "tfserving" / "Dockerfile"
    match = re.search(r"^ARG TFSERVING_VERSION=(\S+)$", dockerfile.read_text(), re.MULTILINE)
    assert match, "images/tfserving/Dockerfile has no ARG TFSERVING_VERSION"
    assert f"tensorflow/serving:{match.group(1)}" == OFFICIAL_IMAGE


def test_tensorflow_model_server_serves_the_export(
    exported: tuple[Path, list[list[float]]], tmp_path: Path
) -> None:
    if find("tensorflow_model_server") is None:
        pytest.skip(NO_BINARY)
    base, expected = exported
    md = write_md(tmp_path / "md.yaml", NAME, "tfserving", base.as_uri())
    with serving(md, tmp=tmp_path) as served:
        assert served.url.endswith(f"/v1/models/{NAME}")
        status, body = http("POST", f"{served.url}:predict", {"instances": ROWS})
        assert status == 200, json.dumps(body)
        assert max_diff(body["predictions"], expected) <= 1e-5
        assert served.stop() == 0
