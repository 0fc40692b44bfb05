"""SIGTERM under load: our ONNX Runtime server, as its container runs it, drains and drops nothing.

In a pod, the kubelet runs the preStop sleep and then sends SIGTERM; requests already on
their way to the server (keep-alive connections of proxies and clients, bodies still
uploading) must still be answered. This starts the real server process on 127.0.0.1, puts a
bounded load on it over keep-alive connections, holds a few requests with half their body
sent, sends SIGTERM mid-load, and counts the failures among requests the server had already
accepted: there must be none.

The client is a few lines of raw HTTP/1.1 over asyncio streams, so the test knows exactly
when a request's bytes were written: on the loopback a write that returns has delivered
them to the server's socket. A request written before SIGTERM was accepted, and so was any
request that got an answer; one written after SIGTERM may meet a closed listener or an idle
connection closed under it, which is the client's to retry (in a cluster, the preStop sleep
keeps new requests away from a pod by then).

Every wait is bounded (WAIT_S); the load is bounded in requests (MAX_REQUESTS).
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # before anything imports onnxruntime

import asyncio
import json
import signal
import socket
import sys
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from kubeserve.api import ModelDeployment
from kubeserve.config import OperatorConfig
from kubeserve.dataplane.onnx_server import ServerOptions
from kubeserve.render import render

pytestmark = pytest.mark.runtimes

MODEL = "tiny"
WAIT_S = 30.0  # upper bound of any single wait
LOAD_CONNECTIONS = 12  # keep-alive connections sending back to back
UPLOADS = 4  # connections whose request body is half sent when SIGTERM arrives
SIGNAL_AFTER = 150  # answered requests before SIGTERM
MAX_REQUESTS = 3000  # the load's bound, far above what runs before the server is gone

BODY = json.dumps(
    {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0.5, -1, 2, 0.25]}]}
).encode()
HEAD = (
    f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\n"
    f"Host: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
).encode()
REQUEST = HEAD + BODY
# A connect refused by a closed listener, or reset because the listener closed while the
# connection waited in its backlog: the server never saw it.
NOT_ACCEPTED = (ConnectionRefusedError, ConnectionResetError)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            net,
            (torch.randn(2, 4),),
            str(folder / "model.onnx"),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            dynamo=False,
        )
    return folder


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    proc: asyncio.subprocess.Process
    port: int
    log: list[bytes] = field(default_factory=list)

    def log_text(self) -> str:
        return b"".join(self.log).decode(errors="replace")


@pytest.fixture
async def server(model_dir: Path) -> AsyncIterator[Server]:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kubeserve.dataplane.onnx_server",
        "--model-dir", str(model_dir), "--model-name", MODEL,
        "--host", "127.0.0.1", "--port", str(port),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    running = Server(proc, port)
    try:

        async def until_ready() -> None:
            assert proc.stderr is not None
            while line := await proc.stderr.readline():
                running.log.append(line)
                if b"is ready at" in line:
                    return
            raise AssertionError(running.log_text())

        await asyncio.wait_for(until_ready(), WAIT_S)
        yield running
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@dataclass
class Response:
    status: int
    close: bool  # the server said Connection: close


async def read_response(reader: asyncio.StreamReader) -> Response:
    status_line = await reader.readuntil(b"\r\n")
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    await reader.readexactly(int(headers.get("content-length", "0")))
    return Response(status, headers.get("connection") == "close")


@dataclass
class Outcome:
    written_before_signal: bool
    answered_after_signal: bool = False
    status: int | None = None  # None: the connection ended without an answer
    error: str = ""


@dataclass
class Load:
    server: Server
    signalled: asyncio.Event = field(default_factory=asyncio.Event)
    started: int = 0
    answered: int = 0
    refused: int = 0
    outcomes: list[Outcome] = field(default_factory=list)

    signalled_at: float = 0.0

    def sigterm(self) -> None:
        self.signalled.set()  # first: every write before this line was before the signal
        self.signalled_at = time.monotonic()
        self.server.proc.send_signal(signal.SIGTERM)

    async def worker(self) -> None:
        """Requests back to back on one keep-alive connection, reconnecting when it ends,
        until the listener refuses or the bound is reached."""
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while self.started < MAX_REQUESTS:
                if conn is None:
                    try:
                        conn = await asyncio.open_connection("127.0.0.1", self.server.port)
                    except NOT_ACCEPTED:
                        self.refused += 1  # never accepted: safe for any client to retry
                        return
                reader, writer = conn
                self.started += 1
                writer.write(REQUEST)
                outcome = Outcome(written_before_signal=not self.signalled.is_set())
                self.outcomes.append(outcome)
                try:
                    response = await asyncio.wait_for(read_response(reader), WAIT_S)
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    outcome.error = repr(exc)
                    writer.close()
                    conn = None
                    continue
                outcome.status = response.status
                outcome.answered_after_signal = self.signalled.is_set()
                if response.status == 200:
                    self.answered += 1
                    if self.answered == SIGNAL_AFTER:
                        self.sigterm()
                if response.close:
                    writer.close()
                    conn = None
        finally:
            if conn is not None:
                conn[1].close()


async def refuses_connections(port: int) -> None:
    """Returns once the server's listener is closed (SIGTERM reached the server)."""
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except NOT_ACCEPTED:
            return
        writer.close()
        await asyncio.sleep(0.01)


async def test_sigterm_mid_load_fails_no_accepted_request(server: Server) -> None:
    load = Load(server)
    # Requests still uploading their body when SIGTERM arrives (a large tensor on a slow
    # link): headers and half the body now, the rest once the server is shutting down.
    uploads = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(UPLOADS)]
    half = len(HEAD) + len(BODY) // 2
    for _, writer in uploads:
        writer.write(REQUEST[:half])

    async def finish_uploads() -> list[Response]:
        await load.signalled.wait()
        await refuses_connections(server.port)  # the server is shutting down by now
        for _, writer in uploads:
            writer.write(REQUEST[half:])
        return list(await asyncio.gather(*(read_response(reader) for reader, _ in uploads)))

    finishing = asyncio.create_task(finish_uploads())
    try:
        await asyncio.wait_for(
            asyncio.gather(*(load.worker() for _ in range(LOAD_CONNECTIONS))), WAIT_S
        )
        assert load.signalled.is_set(), f"only {load.answered} answers before the bound"
        upload_responses = await asyncio.wait_for(finishing, WAIT_S)
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        raise AssertionError(f"an upload in flight at SIGTERM got no answer: {exc!r}") from exc
    finally:
        finishing.cancel()
        for _, writer in uploads:
            writer.close()
    assert server.proc.stderr is not None
    server.log.append(await asyncio.wait_for(server.proc.stderr.read(), WAIT_S))
    returncode = await asyncio.wait_for(server.proc.wait(), WAIT_S)
    drained_in = time.monotonic() - load.signalled_at
    log = server.log_text()

    # Accepted: written before SIGTERM, or answered at all. Every one must succeed.
    accepted = [o for o in load.outcomes if o.written_before_signal or o.status is not None]
    failed = [o for o in accepted if o.status != 200]
    in_flight = [o for o in accepted if o.written_before_signal and o.answered_after_signal]
    assert not failed, f"{len(failed)} of {len(accepted)} accepted requests failed: {failed[:5]}"
    assert [r.status for r in upload_responses] == [200] * UPLOADS
    # A draining server tells keep-alive clients to take their next request elsewhere.
    assert all(r.close for r in upload_responses)
    assert in_flight, "no request was in flight at SIGTERM"
    assert returncode == 0, log
    assert "shutting down" in log
    # Done when the last request was answered, not when the drain's timeout ran out.
    assert drained_in < ServerOptions.shutdown_timeout_s, log


def test_the_pod_grants_the_drain_its_time() -> None:
    # The kubelet sends SIGKILL terminationGracePeriodSeconds after the pod starts to
    # terminate, preStop sleep included; our server's drain after SIGTERM lasts at most twice
    # its shutdown_timeout_s (OnnxServer.stop).
    md = ModelDeployment.parse(
        {
            "apiVersion": "kubeserve.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "m", "namespace": "ml"},
            "spec": {"runtime": "onnxruntime", "model": {"uri": "s3://bucket/m"}},
        }
    )
    (deploy,) = [o for o in render(md, OperatorConfig()) if o["kind"] == "Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    sleep = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > sleep + 2 * ServerOptions.shutdown_timeout_s
