"""kubeserve's ONNX Runtime model server: the Open Inference Protocol v2 over HTTP.

Serves `DIR/model.onnx` with dynamic batching, Prometheus metrics and the binary tensor data
extension, so KServe and Triton HTTP clients work unchanged. Inside the image::

    python -m kubeserve.dataplane.onnx_server --model-dir DIR --model-name NAME \\
        [--host 127.0.0.1] [--port 8080] [--max-batch-size 1] [--max-batch-delay-ms 0] \\
        [--intra-op-threads 0] [--inter-op-threads 0] \\
        [--graph-optimization-level all|extended|basic|disable] [--device cpu|cuda] \\
        [--max-body-bytes 67108864] [--no-warmup] [--intra-op-spinning] [--log-level INFO]

In-process (what `kubeserve serve` uses)::

    from kubeserve.dataplane.onnx_server import ServerOptions, serve
    await serve(ServerOptions(model_dir=..., model_name="m", port=8080), ready=event, stop=stop)

- `ServerOptions`: frozen dataclass with one field per flag (`warmup=False` is `--no-warmup`,
  `intra_op_spinning=True` is `--intra-op-spinning`), plus `shutdown_timeout_s` (10 s: how long
  a stop waits for in-flight requests).
- `serve(options, *, ready=None, stop=None)`: binds, loads, warms up, sets `ready`, serves
  until `stop` is set or the task is cancelled, then drains in-flight requests and returns (or
  re-raises the cancellation). Raises `ModelLoadError` if the model cannot be loaded.
- `build_app(options) -> aiohttp.web.Application`: the bare application, for callers that run
  it with their own aiohttp runner; starting it starts the background model load.
- `OnnxServer(options)`: start() / wait_ready() / port / url / stop(), for callers that need the
  bound port (port=0) or finer control, such as tests.

Module map: options (settings, flags), protocol (v2 JSON and binary <-> numpy, validation),
datatypes (type names), jsoncodec (orjson, stdlib fallback), model (InferenceSession), batcher
(dynamic batching), metrics (prometheus_client), service (the serving logic, framework-free),
app (aiohttp routes), server (socket lifecycle), __main__ (CLI, signals).

Importing this package imports onnxruntime (with ORT_DISABLE_TELEMETRY=1 as a default); the
operator itself must not import it.
"""

from __future__ import annotations

import os

# First thing, before any submodule can import onnxruntime: see model.py.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .app import build_app
from .model import ModelLoadError
from .options import ServerOptions
from .server import OnnxServer, serve

__all__ = ["ModelLoadError", "OnnxServer", "ServerOptions", "build_app", "serve"]
