"""Our ONNX Runtime server's Open Inference Protocol v2 over gRPC, against unchanged third-party
clients, with the server in its own process on 127.0.0.1.

- tritonclient.grpc (in this process): raw inputs through its client API, typed contents and
  bad requests through its own compiled stubs and messages (service_pb2/service_pb2_grpc).
- KServe's InferenceGRPCClient runs in a child process: kserve and tritonclient each register
  their own copy of the `inference.*` messages in protobuf's default descriptor pool, and the
  two cannot be imported into one process. For the same reason this process never imports our
  server's generated modules: our .proto is compiled to a FileDescriptorSet instead.

Every wait is bounded: the server's log lines are read by a thread into a queue.
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # before anything imports onnxruntime

import asyncio
import filecmp
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np
import onnxruntime as ort
import pytest
import torch
import tritonclient.grpc as tgrpc
import tritonclient.grpc.aio as tgrpc_aio
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_tools import protoc
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2 as tpb
from tritonclient.grpc import service_pb2_grpc as tpb_grpc

pytestmark = pytest.mark.runtimes

REPO = Path(__file__).resolve().parents[2]
SOURCE_ROOT = REPO / "operator"
PROTO = "kubeserve/dataplane/onnx_server/oip/inference.proto"
GENERATED = ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py")
MODEL = "tiny"
WAIT_S = 60.0  # upper bound of any wait; a healthy start takes 2-4 s on 2 busy cores
SERVICE = "inference.GRPCInferenceService"
METHODS = {
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
}


class TinyNet(torch.nn.Module):
    """Two inputs of different types, two outputs, a dynamic batch axis; the embedding makes
    ONNX Runtime itself fail on an out-of-range index (as in test_onnx_server.py)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 3)
        self.embedding = torch.nn.Embedding(10, 3)

    def forward(self, x: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tanh(self.linear(x)) + self.embedding(k), x.sum(dim=1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny")
    batch = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            TinyNet().eval(),
            (torch.randn(2, 4), torch.tensor([1, 2])),
            str(directory / "model.onnx"),
            input_names=["x", "k"],
            output_names=["y", "s"],
            dynamic_axes={"x": batch, "k": batch, "y": batch, "s": batch},
            dynamo=False,
        )
    return directory


@pytest.fixture(scope="module")
def session(model_dir: Path) -> ort.InferenceSession:
    """The reference: ONNX Runtime in this process, on the same file."""
    return ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])


def expected(session: ort.InferenceSession, x: np.ndarray, k: np.ndarray) -> dict[str, Any]:
    y, s = session.run(["y", "s"], {"x": x, "k": k})
    return {"y": y, "s": s}


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    # Merged batches may take other kernels than a single row: equal to float32 rounding.
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


# -- the server process ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    lines: queue.Queue[str]
    http_port: int
    grpc_port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if text in line:
                return
        raise AssertionError(f"the server did not log {text!r} within {WAIT_S} s")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


# Runs the real server's main() with the warm-up held until a line arrives on stdin, to see
# the server before it is ready.
GATED_MAIN = """
import sys
from kubeserve.dataplane.onnx_server.__main__ import main
from kubeserve.dataplane.onnx_server.model import LoadedModel
warmup = LoadedModel.warmup
def gated(self):
    sys.stdin.readline()
    warmup(self)
LoadedModel.warmup = gated
sys.exit(main(sys.argv[1:]))
"""


def start_server(model_dir: Path, *flags: str, gated: bool = False) -> ServerProcess:
    http_port, grpc_port = free_port(), free_port()
    args = [
        "--model-dir",
        str(model_dir),
        "--model-name",
        MODEL,
        "--port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        *flags,
    ]
    command = [sys.executable, "-c", GATED_MAIN] if gated else [sys.executable, "-m"]
    if not gated:
        command.append("kubeserve.dataplane.onnx_server")
    process = subprocess.Popen(
        [*command, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            sys.stderr.write(line)
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return ServerProcess(process, lines, http_port, grpc_port)


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[ServerProcess]:
    # Batching on, with a delay long enough that concurrent requests of both protocols merge.
    proc = start_server(model_dir, "--max-batch-size", "16", "--max-batch-delay-ms", "100")
    try:
        proc.wait_for("gRPC (inference.GRPCInferenceService")  # logged once the model is ready
        yield proc
    finally:
        assert proc.stop() == 0


@pytest.fixture
def stub(server: ServerProcess) -> Iterator[Any]:
    """tritonclient's own compiled stub: its messages, its method paths."""
    with grpc.insecure_channel(server.address) as channel:
        yield tpb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture
def health(server: ServerProcess) -> Iterator[Any]:
    with grpc.insecure_channel(server.address) as channel:
        yield health_pb2_grpc.HealthStub(channel)


GOOD_X = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
GOOD_K = np.array([3, 7], dtype=np.int64)


def triton_inputs(x: np.ndarray, k: np.ndarray) -> list[tgrpc.InferInput]:
    xi = tgrpc.InferInput("x", list(x.shape), "FP32")
    xi.set_data_from_numpy(x)  # raw_input_contents: the way tritonclient always sends
    ki = tgrpc.InferInput("k", list(k.shape), "INT64")
    ki.set_data_from_numpy(k)
    return [xi, ki]


def typed_request(x: np.ndarray, k: np.ndarray, **fields: Any) -> Any:
    request = tpb.ModelInferRequest(model_name=MODEL, **fields)
    xi = request.inputs.add(name="x", datatype="FP32", shape=x.shape)
    xi.contents.fp32_contents.extend(x.ravel().tolist())
    ki = request.inputs.add(name="k", datatype="INT64", shape=k.shape)
    ki.contents.int64_contents.extend(k.ravel().tolist())
    return request


def raw_request(x: np.ndarray, k: np.ndarray) -> Any:
    request = tpb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="x", datatype="FP32", shape=x.shape)
    request.inputs.add(name="k", datatype="INT64", shape=k.shape)
    request.raw_input_contents.extend([x.tobytes(), k.tobytes()])
    return request


# -- the protocol's definition ---------------------------------------------------------------


def compile_ours() -> descriptor_pb2.FileDescriptorProto:
    """Our inference.proto as protoc parses it, without loading it into any descriptor pool."""
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"oip-{os.getpid()}.pb"
    try:
        assert (
            protoc.main(["protoc", f"-I{SOURCE_ROOT}", f"--descriptor_set_out={out}", PROTO]) == 0
        )
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    finally:
        out.unlink(missing_ok=True)


def messages(file: descriptor_pb2.FileDescriptorProto) -> dict[str, Any]:
    """Every message (nested ones and map entries included) by full name: for each field, what
    decides its wire format and meaning."""
    found: dict[str, Any] = {}

    def walk(message: descriptor_pb2.DescriptorProto, prefix: str) -> None:
        name = f"{prefix}.{message.name}"
        found[name] = {
            field.number: (
                field.name,
                descriptor_pb2.FieldDescriptorProto.Type.Name(field.type),
                descriptor_pb2.FieldDescriptorProto.Label.Name(field.label),
                field.type_name,
                message.oneof_decl[field.oneof_index].name
                if field.HasField("oneof_index")
                else None,
            )
            for field in message.field
        }
        for nested in message.nested_type:
            walk(nested, name)

    for message in file.message_type:
        walk(message, f".{file.package}")
    return found


def methods(file: descriptor_pb2.FileDescriptorProto) -> dict[str, tuple[str, str]]:
    (service,) = [s for s in file.service if s.name == "GRPCInferenceService"]
    return {m.name: (m.input_type, m.output_type) for m in service.method}


KSERVE_DESCRIPTOR = """
import sys
from kserve.protocol.grpc import grpc_predict_v2_pb2
sys.stdout.buffer.write(grpc_predict_v2_pb2.DESCRIPTOR.serialized_pb)
"""


def kserve_descriptor() -> descriptor_pb2.FileDescriptorProto:
    done = subprocess.run(
        [sys.executable, "-c", KSERVE_DESCRIPTOR], capture_output=True, timeout=WAIT_S, check=True
    )
    return descriptor_pb2.FileDescriptorProto.FromString(done.stdout)


def test_our_proto_is_wire_compatible_with_tritonclient_and_kserve() -> None:
    ours = compile_ours()
    assert ours.package == "inference"
    assert set(methods(ours)) == METHODS
    triton = descriptor_pb2.FileDescriptorProto()
    tpb.DESCRIPTOR.CopyToProto(triton)
    ours_messages = messages(ours)
    defined_by_someone: dict[str, set[int]] = {name: set() for name in ours_messages}
    for theirs in (triton, kserve_descriptor()):
        assert theirs.package == "inference"
        # Each message we define exists there, and every field it has there we have too with
        # exactly the same number, name, type, label, message type and oneof. (KServe's
        # InferParameter lacks Triton's double_param and uint64_param: a oneof's extra
        # members change nothing for a client that never sends them. Triton defines more
        # messages, for its extensions; we need none of them.)
        their_messages = messages(theirs)
        for name, fields in ours_messages.items():
            for number, field in their_messages[name].items():
                assert fields.get(number) == field, (name, number)
            defined_by_someone[name] |= set(their_messages[name])
        # The same six methods: the same paths, request and response types.
        their_methods = methods(theirs)
        for name, types in methods(ours).items():
            assert their_methods[name] == types, name
    # And no field of ours is one that neither client knows.
    for name, fields in ours_messages.items():
        assert set(fields) == defined_by_someone[name], name


def test_the_generated_modules_are_what_grpcio_tools_makes_of_the_proto(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    argv = [
        "protoc",
        f"-I{SOURCE_ROOT}",
        f"--python_out={target}",
        f"--pyi_out={target}",
        f"--grpc_python_out={target}",
        PROTO,
    ]
    assert protoc.main(argv) == 0
    fresh = target / Path(PROTO).parent
    committed = SOURCE_ROOT / Path(PROTO).parent
    for name in GENERATED:
        assert filecmp.cmp(fresh / name, committed / name, shallow=False), (
            f"{name} is stale: run `make generate` (grpcio-tools as pinned in pyproject)"
        )


# -- unchanged third-party clients -----------------------------------------------------------


def test_tritonclient_raw_infer_metadata_and_readiness(
    server: ServerProcess, session: ort.InferenceSession
) -> None:
    client = tgrpc.InferenceServerClient(server.address)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(MODEL)
        assert client.is_model_ready(MODEL, "1")
        meta = client.get_server_metadata(as_json=True)
        assert meta["name"] == "kubeserve-onnxruntime"
        model = client.get_model_metadata(MODEL, as_json=True)
        assert model["platform"] == "onnxruntime_onnx" and model["versions"] == ["1"]
        assert model["inputs"] == [
            {"name": "x", "datatype": "FP32", "shape": ["-1", "4"]},  # int64 in proto JSON
            {"name": "k", "datatype": "INT64", "shape": ["-1"]},
        ]
        assert [o["name"] for o in model["outputs"]] == ["y", "s"]

        result = client.infer(MODEL, triton_inputs(GOOD_X, GOOD_K), request_id="r-1")
        want = expected(session, GOOD_X, GOOD_K)
        assert result.get_response().id == "r-1"
        assert_close(result.as_numpy("y"), want["y"])
        assert_close(result.as_numpy("s"), want["s"])

        # One requested output, and a version in the request.
        only = client.infer(
            MODEL,
            triton_inputs(GOOD_X, GOOD_K),
            model_version="1",
            outputs=[tgrpc.InferRequestedOutput("s")],
        )
        assert [o.name for o in only.get_response().outputs] == ["s"]
        assert_close(only.as_numpy("s"), want["s"])
    finally:
        client.close()


def test_typed_contents_in_and_out(
    server: ServerProcess, stub: Any, session: ort.InferenceSession
) -> None:
    want = expected(session, GOOD_X, GOOD_K)
    response = stub.ModelInfer(typed_request(GOOD_X, GOOD_K, id="t"), timeout=WAIT_S)
    assert response.model_name == MODEL and response.model_version == "1" and response.id == "t"
    assert not response.raw_output_contents  # typed in, typed out
    by_name = {o.name: o for o in response.outputs}
    assert list(by_name["y"].shape) == [2, 3] and by_name["y"].datatype == "FP32"
    y = np.array(by_name["y"].contents.fp32_contents, dtype=np.float32).reshape(2, 3)
    assert_close(y, want["y"])

    # Raw outputs when asked for, as KServe's client asks.
    request = typed_request(GOOD_X, GOOD_K)
    request.parameters["binary_data_output"].bool_param = True
    response = stub.ModelInfer(request, timeout=WAIT_S)
    assert len(response.raw_output_contents) == 2
    s = np.frombuffer(response.raw_output_contents[1], dtype="<f4")
    assert_close(s, want["s"])

    # Raw in, raw out (what Triton's server does too).
    response = stub.ModelInfer(raw_request(GOOD_X, GOOD_K), timeout=WAIT_S)
    y = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(2, 3)
    assert_close(y, want["y"])


KSERVE_CLIENT = """
import asyncio, json, sys
import grpc
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest

async def main(address, model):
    x = np.array(json.loads(sys.argv[3]), dtype=np.float32)
    k = np.array(json.loads(sys.argv[4]), dtype=np.int64)
    out = {}
    client = InferenceGRPCClient(address, timeout=60)
    try:
        out["live"] = await client.is_server_live()
        out["ready"] = await client.is_server_ready()
        out["model_ready"] = await client.is_model_ready(model)
        for binary in (False, True):
            xi = InferInput("x", list(x.shape), "FP32")
            xi.set_data_from_numpy(x, binary_data=binary)
            ki = InferInput("k", list(k.shape), "INT64")
            ki.set_data_from_numpy(k, binary_data=binary)
            request = InferRequest(model_name=model, infer_inputs=[xi, ki], request_id="kserve")
            response = await client.infer(request)
            out["raw" if binary else "typed"] = {
                "id": response.id,
                "outputs": {o.name: o.as_numpy().tolist() for o in response.outputs},
            }
        try:
            await client.infer(InferRequest(model_name="other", infer_inputs=[xi, ki]))
        except grpc.RpcError as exc:
            out["error"] = [exc.code().name, exc.details()]
    finally:
        await client.close()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_kserve_grpc_client(server: ServerProcess, session: ort.InferenceSession) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            KSERVE_CLIENT,
            server.address,
            MODEL,
            json.dumps(GOOD_X.tolist()),
            json.dumps(GOOD_K.tolist()),
        ],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["live"] and out["ready"] and out["model_ready"]
    want = expected(session, GOOD_X, GOOD_K)
    for mode in ("typed", "raw"):
        assert out[mode]["id"] == "kserve"
        for name in ("y", "s"):
            assert_close(np.array(out[mode]["outputs"][name], dtype=np.float32), want[name])
    assert out["error"][0] == "NOT_FOUND" and "is not served here" in out["error"][1]


# -- status codes ----------------------------------------------------------------------------


def _mutate(change: Callable[[Any], None], base: Callable[[], Any] | None = None) -> Any:
    request = (base or (lambda: typed_request(GOOD_X[:1], GOOD_K[:1])))()
    change(request)
    return request


def _set(**fields: Any) -> Callable[[Any], None]:
    def change(request: Any) -> None:
        for key, value in fields.items():
            setattr(request, key, value)

    return change


def _input(index: int, **fields: Any) -> Callable[[Any], None]:
    def change(request: Any) -> None:
        tensor = request.inputs[index]
        for key, value in fields.items():
            if key == "shape":
                del tensor.shape[:]
                tensor.shape.extend(value)
            else:
                setattr(tensor, key, value)

    return change


def _drop_input(index: int) -> Callable[[Any], None]:
    def change(request: Any) -> None:
        del request.inputs[index]

    return change


def _append(build: Callable[[Any], None]) -> Callable[[Any], None]:
    return build


def _dup_x(request: Any) -> None:
    request.inputs.add().CopyFrom(request.inputs[0])


def _unknown_input(request: Any) -> None:
    request.inputs.add().CopyFrom(request.inputs[1])
    request.inputs[2].name = "z"


def _wrong_contents_field(request: Any) -> None:
    request.inputs[0].contents.Clear()
    request.inputs[0].contents.int64_contents.extend([1, 2, 3, 4])


def _no_contents(request: Any) -> None:
    request.inputs[0].ClearField("contents")


def _short_contents(request: Any) -> None:
    del request.inputs[0].contents.fp32_contents[-1]


def _typed_and_raw(request: Any) -> None:
    request.raw_input_contents.extend([GOOD_X[:1].tobytes(), GOOD_K[:1].tobytes()])


def _raw_count(request: Any) -> None:
    del request.raw_input_contents[-1]


def _raw_size(request: Any) -> None:
    request.raw_input_contents[0] = bytes(12)


def _unknown_output(request: Any) -> None:
    request.outputs.add(name="nope")


def _out_of_range_index(request: Any) -> None:
    request.inputs[1].contents.int64_contents[0] = 99  # valid INT64, beyond the embedding


def _raw() -> Any:
    return raw_request(GOOD_X[:1], GOOD_K[:1])


INVALID = grpc.StatusCode.INVALID_ARGUMENT
BAD_REQUESTS = [
    pytest.param(
        _set(model_name="other"),
        None,
        grpc.StatusCode.NOT_FOUND,
        "is not served here",
        id="unknown-model",
    ),
    pytest.param(
        _set(model_version="7"),
        None,
        grpc.StatusCode.NOT_FOUND,
        "no version '7'",
        id="unknown-version",
    ),
    pytest.param(lambda r: r.ClearField("inputs"), None, INVALID, "non-empty list", id="no-inputs"),
    pytest.param(_drop_input(1), None, INVALID, "missing input(s): k", id="missing-input"),
    pytest.param(_unknown_input, None, INVALID, "unknown input 'z'", id="unknown-input"),
    pytest.param(_dup_x, None, INVALID, "'x' is given more than once", id="duplicate-input"),
    pytest.param(
        _input(0, datatype="FP64"),
        None,
        INVALID,
        "datatype FP64 but the model expects FP32",
        id="wrong-datatype",
    ),
    pytest.param(
        _input(0, shape=[1, 2, 2]),
        None,
        INVALID,
        "shape [1, 2, 2] but the model expects [-1, 4]",
        id="wrong-rank",
    ),
    pytest.param(
        _input(0, shape=[1, 5]),
        None,
        INVALID,
        "shape [1, 5] but the model expects [-1, 4]",
        id="wrong-static-dim",
    ),
    pytest.param(_input(0, shape=[-1, 4]), None, INVALID, "non-negative", id="negative-dim"),
    pytest.param(
        _short_contents,
        None,
        INVALID,
        "3 elements in contents.fp32_contents but shape [1, 4] needs 4",
        id="element-count",
    ),
    pytest.param(
        _wrong_contents_field,
        None,
        INVALID,
        "data goes in contents.fp32_contents, but contents.int64_contents is set",
        id="wrong-contents-field",
    ),
    pytest.param(
        _no_contents, None, INVALID, "neither contents nor raw_input_contents", id="no-data"
    ),
    pytest.param(
        _typed_and_raw,
        None,
        INVALID,
        "has typed contents but the request uses raw_input_contents",
        id="typed-and-raw-mixed",
    ),
    pytest.param(
        _raw_count,
        _raw,
        INVALID,
        "raw_input_contents has 1 entries but the request has 2 inputs",
        id="raw-count",
    ),
    pytest.param(
        _raw_size,
        _raw,
        INVALID,
        "12 bytes of binary data but shape [1, 4] of FP32 needs 16",
        id="raw-size",
    ),
    pytest.param(_unknown_output, None, INVALID, "unknown output 'nope'", id="unknown-output"),
    pytest.param(
        _out_of_range_index,
        None,
        grpc.StatusCode.INTERNAL,
        "out of data bounds",
        id="onnxruntime-error",
    ),
]


@pytest.mark.parametrize(("change", "base", "code", "message"), BAD_REQUESTS)
def test_a_bad_request_gets_its_exact_status_code_and_the_server_keeps_serving(
    stub: Any,
    change: Callable[[Any], None],
    base: Callable[[], Any] | None,
    code: grpc.StatusCode,
    message: str,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(_mutate(change, base), timeout=WAIT_S)
    assert caught.value.code() == code, caught.value.details()
    assert message in caught.value.details()
    assert stub.ModelInfer(typed_request(GOOD_X, GOOD_K), timeout=WAIT_S).outputs


def test_metadata_and_readiness_of_an_unknown_model_are_not_found(stub: Any) -> None:
    for call, request in (
        (stub.ModelMetadata, tpb.ModelMetadataRequest(name="other")),
        (stub.ModelReady, tpb.ModelReadyRequest(name="other")),
        (stub.ModelMetadata, tpb.ModelMetadataRequest(name=MODEL, version="2")),
        (stub.ModelReady, tpb.ModelReadyRequest(name=MODEL, version="2")),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call(request, timeout=WAIT_S)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_an_rpc_this_server_does_not_implement_is_unimplemented(stub: Any) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelConfig(tpb.ModelConfigRequest(name=MODEL), timeout=WAIT_S)  # Triton's own
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_grpc_health_service(health: Any) -> None:
    for service in ("", SERVICE):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=WAIT_S)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as caught:
        health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=WAIT_S)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_unavailable_until_ready_then_serving_then_a_clean_exit(model_dir: Path) -> None:
    proc = start_server(model_dir, "--max-body-bytes", "2000", gated=True)
    try:
        proc.wait_for("listening on")  # gRPC is bound before this line; warm-up is held
        with grpc.insecure_channel(proc.address) as channel:
            stub = tpb_grpc.GRPCInferenceServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            check = health_pb2.HealthCheckRequest(service="")
            assert stub.ServerLive(tpb.ServerLiveRequest(), timeout=WAIT_S).live
            assert not stub.ServerReady(tpb.ServerReadyRequest(), timeout=WAIT_S).ready
            assert not stub.ModelReady(tpb.ModelReadyRequest(name=MODEL), timeout=WAIT_S).ready
            not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
            assert health.Check(check, timeout=WAIT_S).status == not_serving
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(typed_request(GOOD_X, GOOD_K), timeout=WAIT_S)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "not ready" in caught.value.details()

            assert proc.process.stdin is not None
            proc.process.stdin.write("go\n")  # release the warm-up
            proc.process.stdin.flush()
            proc.wait_for("gRPC (inference.GRPCInferenceService")
            assert stub.ServerReady(tpb.ServerReadyRequest(), timeout=WAIT_S).ready
            serving = health_pb2.HealthCheckResponse.SERVING
            deadline = time.monotonic() + WAIT_S  # health is set by a task just after ready
            while health.Check(check, timeout=WAIT_S).status != serving:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert stub.ModelInfer(typed_request(GOOD_X, GOOD_K), timeout=WAIT_S).outputs

            # --max-body-bytes bounds a gRPC message too.
            big = np.zeros((200, 4), dtype=np.float32)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(raw_request(big, np.zeros(200, np.int64)), timeout=WAIT_S)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        assert proc.process.stdin is not None
        proc.process.stdin.close()  # a warm-up still held must not hold up the exit
        assert proc.stop() == 0


# -- both protocols at once ------------------------------------------------------------------


async def scrape(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with http.get(url + "/metrics") as response:
        text = await response.text()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


async def test_http_and_grpc_are_served_at_once_and_batched_together(
    server: ServerProcess, session: ort.InferenceSession
) -> None:
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((1, 4)).astype(np.float32) for _ in range(16)]
    ks = [np.array([i % 10], dtype=np.int64) for i in range(16)]
    calls = f"kubeserve_inference_batch_size_count{{model={MODEL}}}"
    big = f"kubeserve_inference_batch_size_bucket{{le=8.0,model={MODEL}}}"
    ok = f"kubeserve_inference_requests_total{{code=200,model={MODEL}}}"
    timeout = aiohttp.ClientTimeout(total=WAIT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        before = await scrape(http, server.url)
        client = tgrpc_aio.InferenceServerClient(server.address)
        try:

            async def over_http(i: int) -> dict[str, np.ndarray]:
                doc = {
                    "inputs": [
                        {
                            "name": "x",
                            "datatype": "FP32",
                            "shape": [1, 4],
                            "data": xs[i].ravel().tolist(),
                        },
                        {"name": "k", "datatype": "INT64", "shape": [1], "data": ks[i].tolist()},
                    ]
                }
                url = f"{server.url}/v2/models/{MODEL}/infer"
                async with http.post(url, json=doc) as response:
                    assert response.status == 200, await response.text()
                    body = await response.json()
                return {
                    o["name"]: np.array(o["data"], dtype=np.float32).reshape(o["shape"])
                    for o in body["outputs"]
                }

            async def over_grpc(i: int) -> dict[str, np.ndarray]:
                inputs = [
                    tgrpc_aio.InferInput("x", [1, 4], "FP32"),
                    tgrpc_aio.InferInput("k", [1], "INT64"),
                ]
                inputs[0].set_data_from_numpy(xs[i])
                inputs[1].set_data_from_numpy(ks[i])
                result = await client.infer(MODEL, inputs)
                return {name: result.as_numpy(name) for name in ("y", "s")}

            replies = await asyncio.gather(
                *(over_http(i) if i % 2 else over_grpc(i) for i in range(16))
            )
        finally:
            await client.close()
        after = await scrape(http, server.url)

    for i, reply in enumerate(replies):
        want = expected(session, xs[i], ks[i])
        assert_close(reply["y"], want["y"])
        assert_close(reply["s"], want["s"])

    # Series not yet written (this test first on a fresh server) count as 0.
    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta(ok) == 16  # both protocols counted alike
    assert delta(calls) < 16
    # A session call of more than 8 rows holds requests of both protocols (8 of each).
    assert delta(calls) - delta(big) >= 1
