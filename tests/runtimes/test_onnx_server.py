"""Our ONNX Runtime server, over real HTTP on 127.0.0.1, in-process and as a subprocess.

The model is a tiny torch module exported once per module with the TorchScript exporter
(`dynamo=False`): it produces the same graph signature and matches torch to ~1e-7, but takes
0.2 s where the dynamo exporter takes ~6 s on this 2-core machine, and the exporter is not what
these tests are about.

Synchronisation is by events only: the server's own readiness future, threading.Events inside
patched model methods, and the subprocess's "is ready" log line. Every wait has a bound.
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # before anything imports onnxruntime

import asyncio
import json
import shutil
import signal
import socket
import struct
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import numpy as np
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from kubeserve.dataplane.onnx_server import ModelLoadError, OnnxServer, ServerOptions
from kubeserve.dataplane.onnx_server import protocol as v2
from kubeserve.dataplane.onnx_server.model import LoadedModel, select_providers

pytestmark = pytest.mark.runtimes

MODEL = "tiny"
INFER = f"/v2/models/{MODEL}/infer"
WAIT_S = 30.0  # upper bound of any wait; a healthy run needs well under a second per wait


class TinyNet(torch.nn.Module):
    """Two inputs of different types, two outputs, a dynamic batch axis. The embedding makes
    ONNX Runtime itself fail at run time on an out-of-range index (a request that passes
    validation and still fails inside ORT)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 3)
        self.embedding = torch.nn.Embedding(10, 3)

    def forward(self, x: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tanh(self.linear(x)) + self.embedding(k), x.sum(dim=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TinyNet]:
    net = TinyNet().eval()
    model_dir = tmp_path_factory.mktemp("tiny")
    batch = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            net,
            (torch.randn(2, 4), torch.tensor([1, 2])),
            str(model_dir / "model.onnx"),
            input_names=["x", "k"],
            output_names=["y", "s"],
            dynamic_axes={"x": batch, "k": batch, "y": batch, "s": batch},
            dynamo=False,
        )
    return model_dir, net


def reference(net: TinyNet, x: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        y, s = net(torch.from_numpy(x), torch.from_numpy(k))
    return y.numpy(), s.numpy()


class StartServer(Protocol):
    def __call__(
        self, *, wait_ready: bool = True, model_dir: Path | None = None, **overrides: Any
    ) -> Awaitable[OnnxServer]: ...


@pytest.fixture
async def start_server(tiny: tuple[Path, TinyNet]) -> AsyncIterator[StartServer]:
    servers: list[OnnxServer] = []

    async def start(
        *, wait_ready: bool = True, model_dir: Path | None = None, **overrides: Any
    ) -> OnnxServer:
        options = ServerOptions(
            model_dir=model_dir or tiny[0], model_name=MODEL, port=0, **overrides
        )
        server = OnnxServer(options)
        await server.start()
        servers.append(server)
        if wait_ready:
            await asyncio.wait_for(server.wait_ready(), WAIT_S)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as session:
        yield session


def tensor(name: str, datatype: str, array: np.ndarray) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": datatype,
        "shape": list(array.shape),
        "data": array.ravel().tolist(),
    }


def infer_doc(x: np.ndarray, k: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {"inputs": [tensor("x", "FP32", x), tensor("k", "INT64", k)], **extra}


GOOD_X = np.array([[0.5, -1.0, 2.0, 0.25]], dtype=np.float32)
GOOD_K = np.array([3], dtype=np.int64)


async def post(
    http: aiohttp.ClientSession,
    server: OnnxServer,
    body: dict[str, Any] | bytes,
    *,
    path: str = INFER,
    headers: dict[str, str] | None = None,
) -> tuple[int, aiohttp.ClientResponse, bytes]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    async with http.post(server.url + path, data=data, headers=headers) as response:
        return response.status, response, await response.read()


async def get(http: aiohttp.ClientSession, server: OnnxServer, path: str) -> tuple[int, Any]:
    async with http.get(server.url + path) as response:
        return response.status, await response.json(content_type=None)


async def scrape(http: aiohttp.ClientSession, server: OnnxServer) -> dict[str, float]:
    """Every sample of /metrics as {"name{label=value,...}": value}."""
    async with http.get(server.url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


async def assert_still_serving(http: aiohttp.ClientSession, server: OnnxServer) -> None:
    status, _, body = await post(http, server, infer_doc(GOOD_X, GOOD_K))
    assert status == 200, body


# -- happy paths -----------------------------------------------------------------------------


async def test_infer_matches_torch_and_metadata_comes_from_the_graph(
    start_server: StartServer, http: aiohttp.ClientSession, tiny: tuple[Path, TinyNet]
) -> None:
    server = await start_server()

    status, meta = await get(http, server, f"/v2/models/{MODEL}")
    assert status == 200
    assert meta["name"] == MODEL
    assert meta["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "k", "datatype": "INT64", "shape": [-1]},
    ]
    assert meta["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "s", "datatype": "FP32", "shape": [-1]},
    ]
    status, server_meta = await get(http, server, "/v2")
    assert status == 200 and "binary_tensor_data" in server_meta["extensions"]
    assert (await get(http, server, "/v2/health/live"))[0] == 200
    assert (await get(http, server, f"/v2/models/{MODEL}/ready"))[0] == 200

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    k = np.array([0, 4, 9], dtype=np.int64)
    status, _, body = await post(http, server, infer_doc(x, k, id="req-1"))
    assert status == 200, body
    doc = json.loads(body)
    assert doc["id"] == "req-1" and doc["model_name"] == MODEL
    outputs = {out["name"]: out for out in doc["outputs"]}
    want_y, want_s = reference(tiny[1], x, k)
    assert outputs["y"]["datatype"] == "FP32" and outputs["y"]["shape"] == [3, 3]
    np.testing.assert_allclose(np.array(outputs["y"]["data"]).reshape(3, 3), want_y, atol=1e-5)
    np.testing.assert_allclose(outputs["s"]["data"], want_s, atol=1e-5)

    # Only the outputs asked for, in the versioned URL form Triton clients use.
    status, _, body = await post(
        http,
        server,
        infer_doc(x, k, outputs=[{"name": "s"}]),
        path=f"/v2/models/{MODEL}/versions/1/infer",
    )
    assert status == 200
    assert [out["name"] for out in json.loads(body)["outputs"]] == ["s"]


async def test_binary_tensor_data_round_trips(
    start_server: StartServer, http: aiohttp.ClientSession, tiny: tuple[Path, TinyNet]
) -> None:
    server = await start_server()
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    k = np.arange(5, dtype=np.int64)
    header = {
        "inputs": [
            {
                "name": "x",
                "datatype": "FP32",
                "shape": [5, 4],
                "parameters": {"binary_data_size": x.nbytes},
            },
            {
                "name": "k",
                "datatype": "INT64",
                "shape": [5],
                "parameters": {"binary_data_size": k.nbytes},
            },
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "s"}],
    }
    header_bytes = json.dumps(header).encode()
    status, response, body = await post(
        http,
        server,
        header_bytes + x.tobytes() + k.tobytes(),
        headers={
            v2.HEADER_LENGTH: str(len(header_bytes)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert status == 200, body
    json_length = int(response.headers[v2.HEADER_LENGTH])
    doc = json.loads(body[:json_length])
    y_meta, s_meta = doc["outputs"]
    assert y_meta["name"] == "y" and "data" not in y_meta
    assert y_meta["parameters"]["binary_data_size"] == len(body) - json_length == 5 * 3 * 4
    y = np.frombuffer(body[json_length:], dtype="<f4").reshape(y_meta["shape"])
    want_y, want_s = reference(tiny[1], x, k)
    np.testing.assert_allclose(y, want_y, atol=1e-5)
    np.testing.assert_allclose(s_meta["data"], want_s, atol=1e-5)

    # JSON inputs, every output binary through the request-level parameter.
    status, response, body = await post(
        http, server, infer_doc(x, k, parameters={"binary_data_output": True})
    )
    assert status == 200
    json_length = int(response.headers[v2.HEADER_LENGTH])
    sizes = [
        out["parameters"]["binary_data_size"] for out in json.loads(body[:json_length])["outputs"]
    ]
    assert sizes == [60, 20]
    s = np.frombuffer(body[json_length + 60 :], dtype="<f4")
    np.testing.assert_allclose(s, want_s, atol=1e-5)


async def test_dynamic_batching_merges_concurrent_requests(
    start_server: StartServer, http: aiohttp.ClientSession, tiny: tuple[Path, TinyNet]
) -> None:
    server = await start_server(max_batch_size=8, max_batch_delay_ms=20)
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((1, 4)).astype(np.float32) for _ in range(16)]
    ks = [np.array([i % 10], dtype=np.int64) for i in range(16)]

    replies = await asyncio.gather(
        *(
            post(http, server, infer_doc(x, k, id=str(i)))
            for i, (x, k) in enumerate(zip(xs, ks, strict=True))
        )
    )

    for i, ((status, _, body), x, k) in enumerate(zip(replies, xs, ks, strict=True)):
        assert status == 200, body
        doc = json.loads(body)
        assert doc["id"] == str(i)
        want_y, want_s = reference(tiny[1], x, k)
        outputs = {out["name"]: out["data"] for out in doc["outputs"]}
        np.testing.assert_allclose(np.array(outputs["y"]).reshape(1, 3), want_y, atol=1e-5)
        np.testing.assert_allclose(outputs["s"], want_s, atol=1e-5)

    metrics = await scrape(http, server)
    calls = metrics[f"kubeserve_inference_batch_size_count{{model={MODEL}}}"]
    rows = metrics[f"kubeserve_inference_batch_size_sum{{model={MODEL}}}"]
    assert rows == 16  # every request ran exactly once
    assert calls < 16  # so at least one session call merged several requests
    assert metrics[f"kubeserve_inference_queue_duration_seconds_count{{model={MODEL}}}"] == 16
    assert metrics[f"kubeserve_inference_requests_total{{code=200,model={MODEL}}}"] == 16


async def test_a_lone_request_does_not_wait_for_the_batch_delay(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(max_batch_size=8, max_batch_delay_ms=2000)
    for _ in range(3):  # one at a time: nothing to merge with
        await assert_still_serving(http, server)
    metrics = await scrape(http, server)
    # Had each request waited for the 2 s delay, the queue time would add up to 6 s.
    assert metrics[f"kubeserve_inference_queue_duration_seconds_count{{model={MODEL}}}"] == 3
    assert metrics[f"kubeserve_inference_queue_duration_seconds_sum{{model={MODEL}}}"] < 1.0


async def test_an_onnxruntime_error_fails_only_its_own_request_in_a_batch(
    start_server: StartServer, http: aiohttp.ClientSession, tiny: tuple[Path, TinyNet]
) -> None:
    server = await start_server(max_batch_size=8, max_batch_delay_ms=20)
    xs = [GOOD_X + i for i in range(6)]
    ks = [np.array([i], dtype=np.int64) for i in range(6)]
    ks[2] = np.array([99], dtype=np.int64)  # valid INT64, but out of the embedding's range

    replies = await asyncio.gather(
        *(post(http, server, infer_doc(x, k)) for x, k in zip(xs, ks, strict=True))
    )

    for i, (status, _, body) in enumerate(replies):
        if i == 2:
            assert status == 500
            assert "out of data bounds" in json.loads(body)["error"]
        else:
            assert status == 200, body
            y = json.loads(body)["outputs"][0]["data"]
            np.testing.assert_allclose(
                np.array(y).reshape(1, 3), reference(tiny[1], xs[i], ks[i])[0], atol=1e-5
            )
    await assert_still_serving(http, server)


# -- bad requests ----------------------------------------------------------------------------


def _body(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


X = tensor("x", "FP32", GOOD_X)
K = tensor("k", "INT64", GOOD_K)
_BINARY_HEADER = json.dumps(
    {"inputs": [{**X, "data": None, "parameters": {"binary_data_size": 12}}, K]}
).encode()

BAD_REQUESTS = [
    pytest.param(
        "/v2/models/other/infer", _body(X, K), {}, 404, "is not served here", id="unknown-model"
    ),
    pytest.param(
        f"/v2/models/{MODEL}/versions/7/infer",
        _body(X, K),
        {},
        404,
        "no version '7'",
        id="unknown-version",
    ),
    pytest.param(INFER, b'{"inputs": [', {}, 400, "not valid JSON", id="malformed-json"),
    pytest.param(INFER, b"[1, 2]", {}, 400, "must be a JSON object", id="not-an-object"),
    pytest.param(
        INFER, b'{"id": "a"}', {}, 400, "'inputs' must be a non-empty list", id="no-inputs"
    ),
    pytest.param(INFER, _body(X), {}, 400, "missing input(s): k", id="missing-input"),
    pytest.param(
        INFER, _body(X, K, {**K, "name": "z"}), {}, 400, "unknown input 'z'", id="unknown-input"
    ),
    pytest.param(
        INFER,
        _body({**X, "datatype": "FP64"}, K),
        {},
        400,
        "datatype FP64 but the model expects FP32",
        id="wrong-datatype",
    ),
    pytest.param(
        INFER,
        _body({**X, "shape": [1, 2, 2]}, K),
        {},
        400,
        "shape [1, 2, 2] but the model expects [-1, 4]",
        id="wrong-rank",
    ),
    pytest.param(
        INFER,
        _body({**X, "shape": [1, 5], "data": [1, 2, 3, 4, 5]}, K),
        {},
        400,
        "shape [1, 5] but the model expects [-1, 4]",
        id="wrong-static-dim",
    ),
    pytest.param(
        INFER,
        _body({**X, "shape": [2, 4]}, K),
        {},
        400,
        "has 4 elements in 'data' but shape [2, 4] needs 8",
        id="element-count",
    ),
    pytest.param(
        INFER, _body({**X, "data": [[1, 2], [3]]}, K), {}, 400, "rectangular", id="ragged-data"
    ),
    pytest.param(
        INFER,
        _body({"name": "x", "datatype": "FP32", "shape": [1, 4]}, K),
        {},
        400,
        "neither 'data' nor parameters.binary_data_size",
        id="no-data",
    ),
    pytest.param(
        INFER,
        _body({"name": "x", "datatype": "FP32", "data": [1]}, K),
        {},
        400,
        "needs 'shape'",
        id="no-shape",
    ),
    pytest.param(
        INFER,
        _body(X, {**K, "data": [1.5]}),
        {},
        400,
        "INT64 data must be integers",
        id="float-in-int64",
    ),
    pytest.param(
        INFER,
        _body({**X, "data": ["a", "b", "c", "d"]}, K),
        {},
        400,
        "FP32 data must be numbers",
        id="strings-in-fp32",
    ),
    pytest.param(
        INFER,
        _body(X, K, outputs=[{"name": "nope"}]),
        {},
        400,
        "unknown output 'nope'",
        id="unknown-output",
    ),
    pytest.param(
        INFER,
        _BINARY_HEADER + bytes(12),
        {v2.HEADER_LENGTH: str(len(_BINARY_HEADER))},
        400,
        "12 bytes of binary data but shape [1, 4] of FP32 needs 16",
        id="binary-size-mismatch",
    ),
    pytest.param(
        INFER,
        _BINARY_HEADER + bytes(4),
        {v2.HEADER_LENGTH: str(len(_BINARY_HEADER))},
        400,
        "only 4 bytes of binary data are left",
        id="binary-truncated",
    ),
    pytest.param(
        INFER,
        _body(X, K),
        {v2.HEADER_LENGTH: "100000"},
        400,
        "the body has only",
        id="header-length-past-body",
    ),
]


@pytest.mark.parametrize(("path", "body", "headers", "status", "message"), BAD_REQUESTS)
async def test_bad_request_gets_a_clear_4xx_and_the_server_keeps_serving(
    start_server: StartServer,
    http: aiohttp.ClientSession,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    server = await start_server()
    got, _, reply = await post(http, server, body, path=path, headers=headers)
    assert got == status, reply
    assert message in json.loads(reply)["error"]
    await assert_still_serving(http, server)


async def test_wrong_model_name_on_metadata_and_ready_is_404(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server()
    for path in ("/v2/models/other", "/v2/models/other/ready"):
        status, doc = await get(http, server, path)
        assert status == 404 and "'other' is not served here" in doc["error"]


async def test_body_over_the_limit_is_413(
    start_server: StartServer, http: aiohttp.ClientSession
) -> None:
    server = await start_server(max_body_bytes=512)
    big = _body({**X, "data": [0.0] * 4}, K, id="x" * 600)
    status, _, reply = await post(http, server, big)  # Content-Length known up front
    assert status == 413 and "--max-body-bytes 512" in json.loads(reply)["error"]

    async def chunks() -> AsyncIterator[bytes]:  # chunked: only found out while reading
        for start in range(0, len(big), 100):
            yield big[start : start + 100]

    async with http.post(server.url + INFER, data=chunks()) as response:
        assert response.status == 413
        assert "--max-body-bytes 512" in (await response.json())["error"]
    await assert_still_serving(http, server)
    metrics = await scrape(http, server)
    assert metrics[f"kubeserve_inference_requests_total{{code=413,model={MODEL}}}"] == 2


# -- lifecycle -------------------------------------------------------------------------------


async def test_ready_only_after_load_and_warmup(
    start_server: StartServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    warmup = LoadedModel.warmup

    def gated_warmup(self: LoadedModel) -> None:
        if not gate.wait(WAIT_S):
            raise TimeoutError("the test never opened the warm-up gate")
        warmup(self)

    monkeypatch.setattr(LoadedModel, "warmup", gated_warmup)
    server = await start_server(wait_ready=False)
    try:
        assert (await get(http, server, "/v2/health/live"))[0] == 200
        assert (await get(http, server, "/v2/health/ready"))[0] == 503
        assert (await get(http, server, f"/v2/models/{MODEL}/ready"))[0] == 503
        status, _, body = await post(http, server, infer_doc(GOOD_X, GOOD_K))
        assert status == 503 and "not ready" in json.loads(body)["error"]
    finally:
        gate.set()
    await asyncio.wait_for(server.wait_ready(), WAIT_S)

    assert (await get(http, server, "/v2/health/ready"))[0] == 200
    assert (await get(http, server, f"/v2/models/{MODEL}/ready"))[0] == 200
    metrics = await scrape(http, server)
    assert metrics[f"kubeserve_model_load_seconds{{model={MODEL}}}"] > 0
    assert metrics[f"kubeserve_model_warmup_seconds{{model={MODEL}}}"] > 0
    await assert_still_serving(http, server)


async def test_storage_report_becomes_download_gauges_and_no_warmup_skips_warmup(
    start_server: StartServer,
    http: aiohttp.ClientSession,
    tiny: tuple[Path, TinyNet],
    tmp_path: Path,
) -> None:
    shutil.copy(tiny[0] / "model.onnx", tmp_path / "model.onnx")
    (tmp_path / ".kubeserve-storage.json").write_text(
        json.dumps({"uri": "s3://bucket/tiny/", "bytes": 1234, "seconds": 1.5})
    )
    server = await start_server(model_dir=tmp_path, warmup=False)
    metrics = await scrape(http, server)
    assert metrics[f"kubeserve_model_download_seconds{{model={MODEL}}}"] == 1.5
    assert metrics[f"kubeserve_model_download_bytes{{model={MODEL}}}"] == 1234
    assert f"kubeserve_model_warmup_seconds{{model={MODEL}}}" not in metrics
    assert (await get(http, server, "/v2/health/ready"))[0] == 200


async def test_a_missing_model_fails_the_load_with_a_clear_error(
    start_server: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = await start_server(wait_ready=False, model_dir=tmp_path)
    with pytest.raises(ModelLoadError, match=r"model\.onnx does not exist"):
        await asyncio.wait_for(server.wait_ready(), WAIT_S)
    assert (await get(http, server, "/v2/health/ready"))[0] == 503


async def test_stop_lets_in_flight_requests_finish(
    start_server: StartServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    armed, entered, release = threading.Event(), threading.Event(), threading.Event()
    run = LoadedModel.run

    def held_run(self: LoadedModel, feeds: Any) -> dict[str, np.ndarray]:
        if armed.is_set():  # the warm-up passes through; the request is held
            entered.set()
            release.wait(WAIT_S)
        return run(self, feeds)

    # Patched before the server starts: the batcher keeps a reference to the bound method.
    monkeypatch.setattr(LoadedModel, "run", held_run)
    server = await start_server()
    armed.set()
    loop = asyncio.get_running_loop()
    request = asyncio.create_task(post(http, server, infer_doc(GOOD_X, GOOD_K)))
    try:
        assert await loop.run_in_executor(None, entered.wait, WAIT_S)
        stopping = asyncio.create_task(server.stop())
        # A bounded look, not a synchronisation: stop() must still be waiting for the request.
        done, _ = await asyncio.wait({stopping}, timeout=0.2)
        assert not done
        assert not server.service.is_ready  # draining: a load balancer would stop sending
    finally:
        release.set()
    status, _, body = await asyncio.wait_for(request, WAIT_S)
    assert status == 200, body
    await asyncio.wait_for(stopping, WAIT_S)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_subprocess_serves_then_exits_0_on_sigterm_with_telemetry_off(
    tiny: tuple[Path, TinyNet], http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # The server must turn telemetry off by itself: start it without the variable, with a
    # HOME of its own, and look for the cache directory onnxruntime's telemetry writes.
    env = {
        k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")
    }
    env["HOME"] = str(home)
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kubeserve.dataplane.onnx_server",
        "--model-dir",
        str(tiny[0]),
        "--model-name",
        MODEL,
        "--port",
        str(port),
        "--max-batch-size",
        "4",
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stderr is not None
    log: list[bytes] = []
    try:

        async def until_ready() -> None:
            assert proc.stderr is not None
            while line := await proc.stderr.readline():
                log.append(line)
                if b"is ready at" in line:
                    return
            raise AssertionError(b"".join(log).decode())

        await asyncio.wait_for(until_ready(), WAIT_S)
        url = f"http://127.0.0.1:{port}"
        async with http.post(url + INFER, json=infer_doc(GOOD_X, GOOD_K)) as response:
            assert response.status == 200

        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.stderr.read(), WAIT_S)
        returncode = await asyncio.wait_for(proc.wait(), WAIT_S)
        log.append(rest)
        assert returncode == 0, b"".join(log).decode()
        assert time.monotonic() - stopped_at < 5
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert not (home / ".cache" / "Microsoft").exists(), "onnxruntime telemetry was on"
    assert os.environ["ORT_DISABLE_TELEMETRY"] == "1"


# -- protocol details the tiny model does not exercise ---------------------------------------


def test_bytes_tensors_decode_from_json_and_binary_and_encode_back() -> None:
    spec = {"t": v2.TensorSpec("t", "BYTES", (-1,))}
    outputs = {"o": v2.TensorSpec("o", "BYTES", (-1,))}
    from_json = v2.decode_request(
        _body({"name": "t", "datatype": "BYTES", "shape": [2], "data": ["héllo", ""]}),
        None,
        spec,
        outputs,
    )
    assert from_json.inputs["t"].tolist() == ["héllo", ""]

    packed = b"".join(struct.pack("<I", len(s)) + s for s in ("héllo".encode(), b""))
    header = _body(
        {
            "name": "t",
            "datatype": "BYTES",
            "shape": [2],
            "parameters": {"binary_data_size": len(packed)},
        }
    )
    from_binary = v2.decode_request(header + packed, len(header), spec, outputs)
    assert from_binary.inputs["t"].tolist() == ["héllo", ""]

    body, json_length = v2.encode_response(
        "m", "1", None, [(v2.RequestedOutput("o", True), from_binary.inputs["t"])]
    )
    assert json_length is not None and body[json_length:] == packed


def test_cuda_falls_back_to_cpu_with_a_clear_log_line(caplog: pytest.LogCaptureFixture) -> None:
    cuda, cpu = "CUDAExecutionProvider", "CPUExecutionProvider"
    assert select_providers("cuda", [cuda, cpu]) == [cuda, cpu]
    assert select_providers("cpu", [cuda, cpu]) == [cpu]
    assert not caplog.records
    assert select_providers("cuda", [cpu]) == [cpu]
    assert "FALLING BACK TO CPU" in caplog.text
