"""Keras -> SavedModel in TF Serving's <name>/<version>/ layout, loaded back with TensorFlow;
and TF Serving itself where `tensorflow_model_server` exists (not on these machines: the kind
e2e suite covers it). TensorFlow runs in subprocesses, never in the pytest process.
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # before anything imports onnxruntime

import json
import re
from pathlib import Path

import pytest
from fixtures_local import (
    KERAS_MODEL,
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
