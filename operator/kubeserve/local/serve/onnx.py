"""runtime onnxruntime: our ONNX Runtime v2 server, in this process, with the spec's batching
and session options (the same settings the cluster passes to it as flags)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ...api import ModelDeployment
from ...runtimes.onnxruntime import thread_settings
from ..errors import LocalError, first_line
from . import announce
from .options import LocalOptions

if TYPE_CHECKING:
    from ...dataplane.onnx_server import OnnxServer


async def run(
    md: ModelDeployment, model_dir: Path, opts: LocalOptions, stop: asyncio.Event
) -> None:
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # before the server imports onnxruntime
    from ...dataplane.onnx_server import OnnxServer, ServerOptions

    batching = md.spec.batching
    session = md.spec.session_options
    # spec.threads or sessionOptions; unset, the server sizes ORT's pool to this machine's CPU
    # budget (its cgroup's CPU limit, or its CPU affinity), as it does in a pod.
    threads = thread_settings(md, None)
    options = ServerOptions(
        model_dir=model_dir,
        model_name=md.model_name,
        host=opts.host,
        port=opts.port,
        # gRPC is always on locally, on a free port, printed below (the port flags stay HTTP's).
        grpc_port=0,
        max_batch_size=batching.max_batch_size if batching else 1,
        max_batch_delay_ms=batching.max_delay_ms if batching else 0.0,
        intra_op_threads=threads.intra_op or 0,
        inter_op_threads=threads.inter_op or 0,
        graph_optimization_level=session.graph_optimization_level.value if session else "all",
        # As in the cluster: a GPU spec asks for CUDA; the server falls back to CPU with a warning.
        device="cuda" if md.spec.gpu else "cpu",
        execution_provider=(
            session.execution_provider.value.lower()
            if session and session.execution_provider
            else None
        ),
    )
    if not options.model_path.is_file():
        raise LocalError(
            f"spec.model.uri: {model_dir} has no model.onnx (make one with "
            "`kubeserve package MODEL --format onnx -o DIR`)"
        )
    server = OnnxServer(options)
    try:
        await server.start()
    except OSError as exc:
        raise LocalError(f"cannot listen on {opts.host}:{opts.port}: {first_line(exc)}") from exc
    try:
        if not await _ready(server, stop):
            return
        base = f"{server.url}/v2/models/{md.model_name}"
        announce.serving(
            md,
            base,
            f"infer:   POST {base}/infer",
            f"ready:   {server.url}/v2/health/ready",
            f"metrics: {server.url}/metrics",
            f"grpc:    {server.grpc_address} (inference.GRPCInferenceService, grpc.health.v1)",
            opts=opts,
        )
        await stop.wait()
        announce.stopping(md, opts)
    finally:
        await server.stop()


async def _ready(server: OnnxServer, stop: asyncio.Event) -> bool:
    from ...dataplane.onnx_server import ModelLoadError

    loading = asyncio.ensure_future(server.wait_ready())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({loading, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not loading.done():
            return False
        try:
            loading.result()
        except ModelLoadError as exc:
            raise LocalError(f"cannot load the model: {first_line(exc)}") from exc
        return True
    finally:
        stopped.cancel()
        loading.cancel()
