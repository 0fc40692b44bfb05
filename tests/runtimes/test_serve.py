"""`kubeserve serve -f md.yaml` as a real subprocess on 127.0.0.1: ONNX Runtime in-process
with local, relative, file:// and s3:// (moto) model URIs; clean stops; clear failures."""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # before anything imports onnxruntime

import contextlib
import io
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_local import (
    TINY_MODEL,
    cli_env,
    error_lines,
    http,
    listen_addresses,
    max_diff,
    run_cli,
    serving,
    torch_reference,
    v2_infer,
    write_md,
)

from kubeserve.cli import main
from kubeserve.local.serve.binaries import find

pytestmark = pytest.mark.runtimes

NAME = "tiny"
ROWS = [[0.5, -1.0, 2.0, 0.25], [0.0, 0.0, 0.0, 0.0], [3.0, 1.0, -2.0, 1.5]]
ACCESS_KEY, SECRET_KEY = "kubeserve-test-key", "kubeserve-test-secret"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_model exported by `kubeserve package --format onnx` (in-process: torch is loaded
    here anyway for the reference answers)."""
    out = tmp_path_factory.mktemp("serve") / "models" / NAME
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(
            ["package", TINY_MODEL, "--input-shape", "1,4", "--format", "onnx", "-o", str(out)]
        )
    assert status == 0, stderr.getvalue()
    return out


def test_file_uri_serves_v2_on_loopback(model_dir: Path, tmp_path: Path) -> None:
    md = write_md(tmp_path / "md.yaml", NAME, "onnxruntime", model_dir.as_uri())
    with serving(md, tmp=tmp_path) as served:
        assert served.url.endswith(f"/v2/models/{NAME}")
        assert served.url.startswith("http://127.0.0.1:")
        assert listen_addresses(int(served.base.rsplit(":", 1)[1])) == {"127.0.0.1"}
        status, _ = http("GET", f"{served.base}/v2/health/ready")
        assert status == 200
        assert max_diff(v2_infer(served.url, ROWS), torch_reference(ROWS)) <= 1e-5
        # gRPC too, on a free port of the same host, announced on its own line.
        (grpc_line,) = [line for line in served.lines if line.strip().startswith("grpc:")]
        address = grpc_line.split()[1]
        assert address.startswith("127.0.0.1:")
        assert grpc_serving(address)
        assert served.stop() == 0


def grpc_serving(address: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"), timeout=30
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def test_relative_uri_resolves_against_the_yaml_file(model_dir: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(model_dir, project / "models" / NAME)
    md = write_md(
        project / "md.yaml",
        NAME,
        "onnxruntime",
        f"models/{NAME}",
        batching={"maxBatchSize": 8, "maxDelayMs": 2},
        sessionOptions={"intraOpThreads": 1, "graphOptimizationLevel": "basic"},
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with serving(md, tmp=tmp_path, cwd=elsewhere) as served:
        assert max_diff(v2_infer(served.url, ROWS[:1]), torch_reference(ROWS[:1])) <= 1e-5
        assert served.stop() == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_and_frees_the_port(
    model_dir: Path, tmp_path: Path, signum: int
) -> None:
    md = write_md(tmp_path / "md.yaml", NAME, "onnxruntime", str(model_dir))
    with serving(md, tmp=tmp_path) as served:
        port = int(served.base.rsplit(":", 1)[1])
        assert served.stop(signum) == 0
        assert f"stopping {NAME}" in served.stderr()
        assert "Traceback" not in served.stderr()
        assert listen_addresses(port) == set()
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), 2):
            pass


def test_model_file_uri_goes_through_the_storage_initializer(
    model_dir: Path, tmp_path: Path
) -> None:
    md = write_md(tmp_path / "md.yaml", NAME, "onnxruntime", (model_dir / "model.onnx").as_uri())
    with serving(md, tmp=tmp_path) as served:
        assert max_diff(v2_infer(served.url, ROWS), torch_reference(ROWS)) <= 1e-5
        assert "storage initializer" in served.stderr()
        assert served.stop() == 0


@pytest.fixture
def moto_endpoint(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    if not Path(binary).exists():
        pytest.skip("moto_server is not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 30
        while True:  # bounded poll: moto has no readiness signal but its port
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_s3_uri_is_fetched_first(model_dir: Path, tmp_path: Path, moto_endpoint: str) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="models")
    s3.upload_file(str(model_dir / "model.onnx"), "models", f"{NAME}/model.onnx")
    md = write_md(tmp_path / "md.yaml", NAME, "onnxruntime", f"s3://models/{NAME}/")
    env = cli_env(
        tmp_path,
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_ENDPOINT_URL=moto_endpoint,
        AWS_REGION="us-east-1",
    )
    with serving(md, tmp=tmp_path, env=env) as served:
        assert max_diff(v2_infer(served.url, ROWS), torch_reference(ROWS)) <= 1e-5
        assert served.stop() == 0


@pytest.mark.skipif(
    find("tensorflow_model_server") is not None, reason="tensorflow_model_server is installed here"
)
def test_tfserving_without_the_binary_names_the_official_image(tmp_path: Path) -> None:
    base = tmp_path / "models" / "iris"
    (base / "1").mkdir(parents=True)
    md = write_md(tmp_path / "md.yaml", "iris", "tfserving", "models/iris")
    done = run_cli("serve", "-f", str(md), "--port", "8601", tmp=tmp_path)
    assert done.returncode == 1
    [line] = error_lines(done.stderr)
    assert "tensorflow_model_server" in line
    assert (
        f"docker run --rm -p 127.0.0.1:8601:8501 -v {base}:/models/iris:ro "
        "-e MODEL_NAME=iris tensorflow/serving:"
    ) in line


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"batching": {"maxBatchSize": 0}}, "spec.batching.maxBatchSize"),
        ({"runtime": "triton"}, "spec.runtime"),
        ({"replicaz": 2}, "spec.replicaz: unknown field"),
    ],
    ids=["bound", "enum", "unknown-field"],
)
def test_invalid_spec_fails_with_one_line_naming_the_field(
    tmp_path: Path, spec: dict[str, object], field: str
) -> None:
    runtime = str(spec.pop("runtime", "onnxruntime"))
    md = write_md(tmp_path / "md.yaml", NAME, runtime, "models", **spec)
    done = run_cli("serve", "-f", str(md), tmp=tmp_path)
    assert done.returncode == 1
    [line] = error_lines(done.stderr)
    assert line.startswith("kubeserve serve: error: invalid ModelDeployment")
    assert field in line


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    md = write_md(tmp_path / "md.yaml", NAME, "onnxruntime", "file:///nonexistent/kubeserve")
    done = run_cli("serve", "-f", str(md), tmp=tmp_path)
    assert done.returncode == 1
    assert error_lines(done.stderr) == [
        "kubeserve serve: error: spec.model.uri: /nonexistent/kubeserve does not exist"
    ]


def test_directory_without_the_layout_gets_the_storage_initializers_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "weights.bin").write_bytes(b"x")
    md = write_md(tmp_path / "md.yaml", NAME, "onnxruntime", "weights")
    done = run_cli("serve", "-f", str(md), tmp=tmp_path)
    assert done.returncode == 1
    last = error_lines(done.stderr)[-1]
    assert last.startswith("kubeserve serve: error: the storage initializer could not fetch")
    assert "expected model.onnx" in last and "found: weights.bin" in last


def test_directory_is_fixed_up_in_a_copy_not_in_place(model_dir: Path, tmp_path: Path) -> None:
    # A lone <anything>.onnx is what people export; the storage initializer renames it to
    # model.onnx, as in the cluster, in a temp copy: the user's directory stays as it was.
    export = tmp_path / "export"
    export.mkdir()
    shutil.copy(model_dir / "model.onnx", export / "classifier.onnx")
    md = write_md(tmp_path / "md.yaml", NAME, "onnxruntime", "export")
    with serving(md, tmp=tmp_path) as served:
        assert max_diff(v2_infer(served.url, ROWS), torch_reference(ROWS)) <= 1e-5
        assert served.stop() == 0
    assert sorted(p.name for p in export.iterdir()) == ["classifier.onnx"]
