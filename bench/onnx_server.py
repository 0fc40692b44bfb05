"""Benchmark our ONNX Runtime server against its physical limit and against KServe.

Same model (a small CNN on 3x32x32 inputs, about 2 ms per sample on 2 cores), same inputs, same
load client, at each concurrency:

  raw     InferenceSession.run in this process, batches of min(concurrency, max batch size):
          the physical limit, with no HTTP, no JSON and no client;
  ours    python -m kubeserve.dataplane.onnx_server over HTTP on 127.0.0.1;
  kserve  KServe's Python model server (kserve.ModelServer, FastAPI + uvicorn) serving the same
          model through a small kserve.Model subclass that calls onnxruntime, the way KServe's
          custom-predictor docs do. It binds its REST port on 0.0.0.0 (hard-coded in kserve);
          the bench only sends to 127.0.0.1. gRPC is off.

The load client is an aiohttp ClientSession with one pooled connection per concurrent worker and
pre-encoded request bodies. Client and servers share the same cores (2 on our dev machines), so
every HTTP figure includes the client's CPU time: the "raw" line has no such cost.

    .venv/bin/python bench/onnx_server.py                       # JSON bodies
    .venv/bin/python bench/onnx_server.py --encoding binary     # binary tensor data extension
    .venv/bin/python bench/onnx_server.py --http-stacks         # aiohttp vs starlette+uvicorn
    .venv/bin/python bench/onnx_server.py --protocol grpc       # OIP v2 over gRPC, raw contents

--protocol grpc measures the same three over gRPC: our server with --grpc-port, KServe's with
its gRPC server on (it binds [::], hard-coded; the bench sends to 127.0.0.1 only), through a
grpc.aio client that sends pre-serialised ModelInferRequests with raw_input_contents (the way
tritonclient.grpc sends) on one HTTP/2 channel, with the same ratios as over HTTP.

--http-stacks serves the same InferenceService (the server's framework-free core) behind each
HTTP stack, on a tiny model where the stack's overhead dominates, to choose the stack by
measurement. The --serve-* flags are internal: the bench runs itself as those servers.
"""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # before onnxruntime is imported

import argparse
import asyncio
import contextlib
import json
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODEL_NAME = "bench"
HEADER_LENGTH = "Inference-Header-Content-Length"
READY_TIMEOUT_S = 120.0
STACKS = ("aiohttp", "aiohttp-uvloop", "starlette-uvicorn", "starlette-uvicorn-h11")


# -- the model -------------------------------------------------------------------------------


def export_model(kind: str, model_dir: Path) -> tuple[str, ...]:
    """Write model_dir/model.onnx; returns the input shape without the batch axis."""
    import torch

    torch.manual_seed(0)
    shape: tuple[int, ...]
    if kind == "cnn":
        net: torch.nn.Module = torch.nn.Sequential(
            torch.nn.Conv2d(3, 64, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(64, 64, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(64, 128, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(128, 128, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Flatten(),
            torch.nn.Linear(128 * 8 * 8, 256),
            torch.nn.ReLU(),
            torch.nn.Linear(256, 10),
        )
        shape = (3, 32, 32)
    elif kind == "mlp":  # about 4 M multiply-adds per sample: per-request cost dominates
        net = torch.nn.Sequential(
            torch.nn.Linear(512, 2048),
            torch.nn.ReLU(),
            torch.nn.Linear(2048, 1536),
            torch.nn.ReLU(),
            torch.nn.Linear(1536, 10),
        )
        shape = (512,)
    else:  # "tiny": the HTTP stack dominates
        net = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
        shape = (16,)
    model_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation: 30x faster here
        torch.onnx.export(
            net.eval(),
            (torch.randn(1, *shape),),
            str(model_dir / "model.onnx"),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            dynamo=False,
        )
    return tuple(str(d) for d in shape)


def make_inputs(shape: Sequence[int], count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1, *shape)).astype(np.float32) for _ in range(count)]


def encode(x: np.ndarray, encoding: str) -> tuple[bytes, dict[str, str]]:
    """A v2 request body as a Triton/KServe client would send it."""
    tensor: dict[str, Any] = {"name": "x", "shape": list(x.shape), "datatype": "FP32"}
    if encoding == "json":
        tensor["data"] = x.ravel().tolist()
        body = json.dumps({"inputs": [tensor]}).encode()
        return body, {"Content-Type": "application/json"}
    tensor["parameters"] = {"binary_data_size": x.nbytes}
    header = json.dumps(
        {"inputs": [tensor], "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    ).encode()
    return header + x.tobytes(), {
        HEADER_LENGTH: str(len(header)),
        "Content-Type": "application/octet-stream",
    }


def decode_output(body: bytes, headers: Any) -> np.ndarray:
    length = headers.get(HEADER_LENGTH)
    if length is None:
        out = json.loads(body)["outputs"][0]
        return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
    out = json.loads(body[: int(length)])["outputs"][0]
    return np.frombuffer(body[int(length) :], dtype="<f4").reshape(out["shape"])


# -- measurements ----------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    concurrency: int
    requests: int
    seconds: float
    latencies: list[float]
    errors: int = 0
    server_cpu_s: float = 0.0  # CPU time of the server process (of this process for raw)
    client_cpu_s: float = 0.0
    rows_per_call: float = 0.0  # ours: mean rows per session call (raw: its batch size)

    @property
    def server_cpu_ms(self) -> float:
        return self.server_cpu_s / self.requests * 1000.0

    @property
    def client_cpu_ms(self) -> float:
        return self.client_cpu_s / self.requests * 1000.0

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000.0


def new_session(model_path: Path, spinning: bool) -> Any:
    """A CPU session with the options our server uses, for raw and for KServe alike: the
    comparison is about serving, not session settings."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    spin = "1" if spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def run_raw(
    model_path: Path,
    inputs: list[np.ndarray],
    concurrency: int,
    max_batch: int,
    requests: int,
    spinning: bool,
) -> Result:
    """The physical limit: back-to-back session calls on ready-made batches."""
    session = new_session(model_path, spinning)
    batch = min(concurrency, max_batch)
    batches = [
        np.concatenate([inputs[(i + j) % len(inputs)] for j in range(batch)])
        for i in range(0, len(inputs), batch)
    ]
    for x in batches[:3]:
        session.run(None, {"x": x})
    calls = max(1, requests // batch)
    latencies: list[float] = []
    cpu = time.process_time()
    started = time.perf_counter()
    for i in range(calls):
        t0 = time.perf_counter()
        session.run(None, {"x": batches[i % len(batches)]})
        # Every request of the batch waited for the whole call.
        latencies.extend([time.perf_counter() - t0] * batch)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    return Result(
        "raw", concurrency, calls * batch, seconds, latencies, server_cpu_s=cpu, rows_per_call=batch
    )


async def run_http(
    name: str,
    url: str,
    bodies: list[tuple[bytes, dict[str, str]]],
    concurrency: int,
    requests: int,
    server_pid: int,
) -> Result:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    latencies: list[float] = []
    errors = 0
    next_index = 0

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> float:
            nonlocal errors
            body, headers = bodies[i % len(bodies)]
            t0 = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            return time.perf_counter() - t0

        # Warm-up: open every connection and let the server's caches settle.
        await asyncio.gather(*(one(i) for i in range(concurrency * 2)))

        async def worker() -> None:
            nonlocal next_index
            while next_index < requests:
                i = next_index
                next_index += 1
                latencies.append(await one(i))

        server_cpu, client_cpu = process_cpu_seconds(server_pid), time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        server_cpu = process_cpu_seconds(server_pid) - server_cpu
        client_cpu = time.process_time() - client_cpu
    return Result(
        name, concurrency, len(latencies), seconds, latencies, errors, server_cpu, client_cpu
    )


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (Linux /proc). CPU per request
    stays meaningful on a machine shared with other work, where wall-clock throughput does not."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def check_output(url: str, x: np.ndarray, want: np.ndarray, encoding: str) -> None:
    import aiohttp

    body, headers = encode(x, encoding)
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        payload = await response.read()
        if response.status != 200:
            raise SystemExit(f"{url} answered {response.status}: {payload[:300]!r}")
        got = decode_output(payload, response.headers)
    np.testing.assert_allclose(got, want, atol=1e-4)


# -- gRPC ------------------------------------------------------------------------------------

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"


def grpc_request(x: np.ndarray) -> bytes:
    """A serialised ModelInferRequest with raw_input_contents, as tritonclient.grpc sends it."""
    from kubeserve.dataplane.onnx_server.oip import inference_pb2 as pb

    request = pb.ModelInferRequest(model_name=MODEL_NAME)
    request.inputs.add(name="x", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.astype("<f4").tobytes())
    return bytes(request.SerializeToString())


def grpc_output(payload: bytes) -> np.ndarray:
    from kubeserve.dataplane.onnx_server.oip import inference_pb2 as pb

    response = pb.ModelInferResponse.FromString(payload)
    out = response.outputs[0]
    if response.raw_output_contents:
        return np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(out.shape)
    return np.asarray(out.contents.fp32_contents, dtype=np.float32).reshape(out.shape)


async def run_grpc(
    name: str, address: str, bodies: list[bytes], concurrency: int, requests: int, server_pid: int
) -> Result:
    """run_http's twin: `concurrency` workers on one channel; bytes in, bytes out (the message
    is built once, as the HTTP bodies are), so the client's CPU stays small."""
    import grpc

    latencies: list[float] = []
    errors = 0
    next_index = 0
    async with grpc.aio.insecure_channel(
        address, options=[("grpc.max_receive_message_length", -1)]
    ) as channel:
        infer = channel.unary_unary(INFER_METHOD)  # no (de)serialisers: bytes as they are

        async def one(i: int) -> float:
            nonlocal errors
            t0 = time.perf_counter()
            try:
                await infer(bodies[i % len(bodies)], timeout=60)
            except grpc.aio.AioRpcError:
                errors += 1
            return time.perf_counter() - t0

        await asyncio.gather(*(one(i) for i in range(concurrency * 2)))  # warm-up

        async def worker() -> None:
            nonlocal next_index
            while next_index < requests:
                i = next_index
                next_index += 1
                latencies.append(await one(i))

        server_cpu, client_cpu = process_cpu_seconds(server_pid), time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        server_cpu = process_cpu_seconds(server_pid) - server_cpu
        client_cpu = time.process_time() - client_cpu
    return Result(
        name, concurrency, len(latencies), seconds, latencies, errors, server_cpu, client_cpu
    )


async def check_grpc_output(address: str, x: np.ndarray, want: np.ndarray) -> None:
    import grpc

    async with grpc.aio.insecure_channel(address) as channel:
        try:
            payload = await channel.unary_unary(INFER_METHOD)(grpc_request(x), timeout=60)
        except grpc.aio.AioRpcError as exc:
            raise SystemExit(f"{address} answered {exc.code().name}: {exc.details()}") from None
    np.testing.assert_allclose(grpc_output(payload), want, atol=1e-4)


# -- server processes ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def server_process(
    cmd: list[str], ready_url: str, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    import urllib.error
    import urllib.request

    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while True:  # bounded: a bench, not a test; 20 looks per second at most
                if proc.poll() is not None:
                    raise SystemExit(f"{cmd[:4]} exited early; see {log_path}")
                try:
                    with urllib.request.urlopen(ready_url, timeout=2) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"{ready_url} not ready after {READY_TIMEOUT_S} s")
                time.sleep(0.05)
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- internal server modes -------------------------------------------------------------------


def serve_kserve(model_dir: Path, port: int, spinning: bool, grpc_port: int | None) -> None:
    """KServe's model server with the custom-predictor pattern from its docs."""
    sys.argv = sys.argv[:1]  # kserve parses sys.argv at import time
    import kserve
    from kserve import InferOutput, InferRequest, InferResponse
    from kserve.utils.utils import generate_uuid

    class OnnxModel(kserve.Model):  # type: ignore[misc]
        def __init__(self, name: str, path: Path) -> None:
            super().__init__(name)
            self.path = path
            self.load()

        def load(self) -> bool:
            self.session = new_session(self.path, spinning)
            self.ready = True
            return True

        def predict(
            self, payload: InferRequest, headers: Any = None, response_headers: Any = None
        ) -> InferResponse:
            x = payload.inputs[0].as_numpy()
            (y,) = self.session.run(["y"], {"x": x})
            out = InferOutput(name="y", shape=list(y.shape), datatype="FP32")
            out.set_data_from_numpy(y, binary_data=False)
            # As KServe's own predictors do: its response model requires an id.
            return InferResponse(
                model_name=self.name, infer_outputs=[out], response_id=payload.id or generate_uuid()
            )

    grpc = {"enable_grpc": False} if grpc_port is None else {"grpc_port": grpc_port}
    kserve.ModelServer(http_port=port, workers=1, enable_latency_logging=False, **grpc).start(
        [OnnxModel(MODEL_NAME, model_dir / "model.onnx")]
    )


def serve_stack(stack: str, model_dir: Path, port: int, max_batch: int) -> None:
    """Our InferenceService behind one HTTP stack (for --http-stacks)."""
    from kubeserve.dataplane.onnx_server import ServerOptions, serve
    from kubeserve.dataplane.onnx_server.protocol import HEADER_LENGTH as HEADER
    from kubeserve.dataplane.onnx_server.service import InferenceService

    options = ServerOptions(
        model_dir=model_dir, model_name=MODEL_NAME, port=port, max_batch_size=max_batch
    )
    if stack.startswith("aiohttp"):

        async def main() -> None:
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            await serve(options, stop=stop)

        if stack == "aiohttp-uvloop":
            import uvloop

            uvloop.run(main())
        else:
            asyncio.run(main())
        return

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    service = InferenceService(options)

    async def infer(request: Request) -> Response:
        body = await request.body()
        reply = await service.infer(
            request.path_params["name"], None, body, request.headers.get(HEADER)
        )
        return Response(reply.body, reply.status, reply.headers, reply.content_type)

    async def ready(request: Request) -> Response:
        return Response(b"", 200 if service.is_ready else 503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        await service.load()
        yield
        await service.close()

    app = Starlette(
        routes=[
            Route("/v2/models/{name}/infer", infer, methods=["POST"]),
            Route("/v2/health/ready", ready),
        ],
        lifespan=lifespan,
    )
    loop, http = ("uvloop", "httptools") if stack == "starlette-uvicorn" else ("asyncio", "h11")
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop=loop,
        http=http,
        access_log=False,
        log_level="warning",
    )


# -- orchestration ---------------------------------------------------------------------------


def environment() -> str:
    import aiohttp
    import onnxruntime

    from kubeserve.dataplane.onnx_server import jsoncodec

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average before the run {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
        f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}, "
        f"aiohttp {aiohttp.__version__}, server JSON engine {jsoncodec.ENGINE}"
    )


def report(rows: list[Result]) -> None:
    print(
        "\n| server | concurrency | requests | req/s | p50 ms | p99 ms | server CPU ms/req "
        "| client CPU ms/req | rows per call | errors |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        client = f"{r.client_cpu_ms:.2f}" if r.name != "raw" else "-"
        batch = f"{r.rows_per_call:.1f}" if r.rows_per_call else "-"
        print(
            f"| {r.name} | {r.concurrency} | {r.requests} | {r.throughput:.1f} | "
            f"{r.percentile(50):.2f} | {r.percentile(99):.2f} | {r.server_cpu_ms:.2f} | "
            f"{client} | {batch} | {r.errors} |"
        )


def median_result(results: list[Result]) -> Result:
    """The round with the median throughput (rounds are interleaved across servers)."""
    ordered = sorted(results, key=lambda r: r.throughput)
    return ordered[len(ordered) // 2]


def compare(args: argparse.Namespace, workdir: Path) -> None:
    model_dir = workdir / "model"
    shape = export_model(args.model, model_dir)
    inputs = make_inputs([int(d) for d in shape], 64)
    bodies = [encode(x, args.encoding) for x in inputs]
    grpc = args.protocol == "grpc"
    grpc_bodies = [grpc_request(x) for x in inputs] if grpc else []

    import onnxruntime as ort

    reference = ort.InferenceSession(
        str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    want = reference.run(None, {"x": inputs[0]})[0]
    per_sample = statistics.median(_timed_run(reference, inputs[0]) for _ in range(100))
    print(
        f"model: {args.model}, input {list(shape)} FP32, median batch-1 session call "
        f"{per_sample * 1000:.2f} ms; "
        + (
            f"gRPC message {len(grpc_bodies[0])} bytes (raw contents)"
            if grpc
            else f"body {len(bodies[0][0])} bytes ({args.encoding})"
        )
    )

    ours_port, kserve_port = free_port(), free_port()
    ours_url = f"http://127.0.0.1:{ours_port}/v2/models/{MODEL_NAME}/infer"
    kserve_url = f"http://127.0.0.1:{kserve_port}/v2/models/{MODEL_NAME}/infer"
    ours_cmd = [
        sys.executable,
        "-m",
        "kubeserve.dataplane.onnx_server",
        "--model-dir",
        str(model_dir),
        "--model-name",
        MODEL_NAME,
        "--port",
        str(ours_port),
        "--max-batch-size",
        str(args.max_batch_size),
        "--max-batch-delay-ms",
        str(args.max_batch_delay_ms),
    ]
    spin_flag = ["--intra-op-spinning"] if args.intra_op_spinning else []
    kserve_cmd = [
        sys.executable,
        __file__,
        "--serve-kserve",
        "--model-dir",
        str(model_dir),
        "--port",
        str(kserve_port),
        *spin_flag,
    ]
    ours_cmd += spin_flag
    ours_grpc = kserve_grpc = ""
    if grpc:
        ours_grpc, kserve_grpc = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        ours_cmd += ["--grpc-port", ours_grpc.rsplit(":", 1)[1]]
        kserve_cmd += ["--grpc-port", kserve_grpc.rsplit(":", 1)[1]]
    results: dict[tuple[str, int], list[Result]] = {}
    with contextlib.ExitStack() as stack:
        ours_pid = stack.enter_context(
            server_process(
                ours_cmd, f"http://127.0.0.1:{ours_port}/v2/health/ready", workdir / "ours.log"
            )
        ).pid
        asyncio.run(check_output(ours_url, inputs[0], want, args.encoding))
        if grpc:
            asyncio.run(check_grpc_output(ours_grpc, inputs[0], want))
        kserve_pid = 0
        if not args.skip_kserve:
            kserve_pid = stack.enter_context(
                server_process(
                    kserve_cmd,
                    f"http://127.0.0.1:{kserve_port}/v2/models/{MODEL_NAME}/ready",
                    workdir / "kserve.log",
                )
            ).pid
            asyncio.run(check_output(kserve_url, inputs[0], want, args.encoding))
            if grpc:
                asyncio.run(check_grpc_output(kserve_grpc, inputs[0], want))
        for round_ in range(args.rounds):
            for c in args.concurrency:
                runs: list[Result] = [
                    run_raw(
                        model_dir / "model.onnx",
                        inputs,
                        c,
                        args.max_batch_size,
                        args.requests,
                        args.intra_op_spinning,
                    ),
                    measure_ours(
                        ours_url, bodies, c, args.requests, ours_pid, ours_grpc, grpc_bodies
                    ),
                ]
                if not args.skip_kserve:
                    kserve_run = (
                        run_grpc("kserve", kserve_grpc, grpc_bodies, c, args.requests, kserve_pid)
                        if grpc
                        else run_http("kserve", kserve_url, bodies, c, args.requests, kserve_pid)
                    )
                    runs.append(asyncio.run(kserve_run))
                for r in runs:
                    results.setdefault((r.name, c), []).append(r)
                    print(
                        f"round {round_ + 1} c={c} {r.name}: {r.throughput:.1f} req/s, "
                        f"p50 {r.percentile(50):.2f} ms, server CPU {r.server_cpu_ms:.2f} ms/req",
                        flush=True,
                    )

    report([median_result(v) for v in results.values()])
    print(
        "\nRatios are taken within each round (raw, ours and kserve run back to back, so under "
        "the same outside load), then the median over rounds, [min-max] in brackets."
    )
    for c in args.concurrency:
        raw, ours = results[("raw", c)], results[("ours", c)]
        kserve = results.get(("kserve", c), [])
        parts = [
            "ours/raw throughput "
            + spread([o.throughput / r.throughput for o, r in zip(ours, raw, strict=True)]),
        ]
        if kserve:
            ratios = [o.throughput / k.throughput for o, k in zip(ours, kserve, strict=True)]
            parts.append("ours/kserve throughput " + spread(ratios))
        added = [o.percentile(50) - r.percentile(50) for o, r in zip(ours, raw, strict=True)]
        parts.append("p50 added over raw " + spread(added, " ms", "+.2f"))
        # On a CPU-bound shared machine CPU per request is the steadier capacity measure.
        capacity = [
            r.server_cpu_s / r.requests / ((o.server_cpu_s + o.client_cpu_s) / o.requests)
            for o, r in zip(ours, raw, strict=True)
        ]
        parts.append("CPU capacity ours(server+client)/raw " + spread(capacity))
        if kserve:
            added_kserve = [
                k.percentile(50) - r.percentile(50) for k, r in zip(kserve, raw, strict=True)
            ]
            parts.append(
                "p50 added ours/kserve "
                + spread([a / k for a, k in zip(added, added_kserve, strict=True)])
            )
            parts.append(
                "server CPU per request kserve/ours "
                + spread(
                    [k.server_cpu_ms / o.server_cpu_ms for o, k in zip(ours, kserve, strict=True)]
                )
            )
        print(f"c={c}: " + "; ".join(parts))


def spread(values: list[float], unit: str = "", fmt: str = ".2f") -> str:
    return f"{statistics.median(values):{fmt}}{unit} [{min(values):{fmt}}-{max(values):{fmt}}]"


def stacks(args: argparse.Namespace, workdir: Path) -> None:
    model_dir = workdir / "model"
    shape = export_model(args.model, model_dir)
    inputs = make_inputs([int(d) for d in shape], 64)
    bodies = [encode(x, args.encoding) for x in inputs]
    names = args.stacks
    results: dict[tuple[str, int], list[Result]] = {}
    for round_ in range(args.rounds):
        # Rotate the order each round so no stack always runs first (or last) in a round.
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            port = free_port()
            cmd = [
                sys.executable,
                __file__,
                "--serve-stack",
                name,
                "--model-dir",
                str(model_dir),
                "--port",
                str(port),
                "--max-batch-size",
                str(args.max_batch_size),
            ]
            url = f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}/infer"
            with server_process(
                cmd, f"http://127.0.0.1:{port}/v2/health/ready", workdir / f"{name}.log"
            ) as proc:
                for c in args.concurrency:
                    r = asyncio.run(run_http(name, url, bodies, c, args.requests, proc.pid))
                    results.setdefault((name, c), []).append(r)
                    print(
                        f"round {round_ + 1} {name} c={c}: {r.throughput:.1f} req/s, "
                        f"p50 {r.percentile(50):.2f} ms, server CPU {r.server_cpu_ms:.2f} ms/req",
                        flush=True,
                    )
    report([median_result(v) for v in results.values()])


def measure_ours(
    url: str,
    bodies: list[tuple[bytes, dict[str, str]]],
    concurrency: int,
    requests: int,
    pid: int,
    grpc_address: str = "",
    grpc_bodies: Sequence[bytes] = (),
) -> Result:
    """run_http (run_grpc with a gRPC address), plus the rows per session call our server
    reports for that run."""
    calls, rows = batch_counters(url)
    run = (
        run_grpc("ours", grpc_address, list(grpc_bodies), concurrency, requests, pid)
        if grpc_address
        else run_http("ours", url, bodies, concurrency, requests, pid)
    )
    result = asyncio.run(run)
    calls_after, rows_after = batch_counters(url)
    result.rows_per_call = (rows_after - rows) / max(1.0, calls_after - calls)
    return result


def batch_counters(infer_url: str) -> tuple[float, float]:
    """(session calls, rows) so far, from our server's batch-size histogram in /metrics."""
    import urllib.request

    metrics_url = infer_url.split("/v2/")[0] + "/metrics"
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    values = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("kubeserve_inference_batch_size_")
    }
    return values["kubeserve_inference_batch_size_count"], values[
        "kubeserve_inference_batch_size_sum"
    ]


def _timed_run(session: Any, x: np.ndarray) -> float:
    t0 = time.perf_counter()
    session.run(None, {"x": x})
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved rounds; the median-throughput round is reported",
    )
    parser.add_argument("--encoding", choices=("json", "binary"), default="json")
    parser.add_argument(
        "--protocol",
        choices=("http", "grpc"),
        default="http",
        help="grpc: OIP v2 over gRPC with raw contents (--encoding is then ignored)",
    )
    parser.add_argument(
        "--model",
        choices=("cnn", "mlp", "tiny"),
        default=None,
        help="default: cnn, or tiny with --http-stacks",
    )
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-batch-delay-ms", type=float, default=0.0)
    parser.add_argument("--skip-kserve", action="store_true")
    parser.add_argument(
        "--intra-op-spinning",
        action="store_true",
        help="let ORT's idle threads busy-wait, in all three (our server's default is off)",
    )
    parser.add_argument("--http-stacks", action="store_true")
    parser.add_argument(
        "--stacks",
        nargs="+",
        choices=STACKS,
        default=list(STACKS),
        help="with --http-stacks: which stacks to compare",
    )
    parser.add_argument("--serve-kserve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-stack", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--grpc-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve_kserve:
        serve_kserve(args.model_dir, args.port, args.intra_op_spinning, args.grpc_port)
        return
    if args.serve_stack:
        serve_stack(args.serve_stack, args.model_dir, args.port, args.max_batch_size)
        return

    args.model = args.model or ("tiny" if args.http_stacks else "cnn")
    print("command: " + " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]))
    print(environment())
    print(
        "client and servers share this machine's cores; HTTP and gRPC figures include the "
        "client's CPU time"
    )
    with tempfile.TemporaryDirectory(prefix="kubeserve-bench-") as tmp:
        if args.http_stacks:
            stacks(args, Path(tmp))
        else:
            compare(args, Path(tmp))


if __name__ == "__main__":
    main()
