"""The serving logic behind the HTTP routes, free of any HTTP framework.

Owns the model's lifecycle (load -> warm-up -> ready -> draining), the batcher, the metrics, and
turns one infer request body into one reply. Keeping it framework-free is what let us measure the
HTTP stacks against each other on identical work (bench/onnx_server.py --http-stacks).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kubeserve import __version__

from . import jsoncodec
from .batcher import Batcher
from .errors import (
    BadRequest,
    InferenceFailed,
    ModelNotFound,
    NotReady,
    PayloadTooLarge,
    ServingError,
)
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import ServerMetrics
from .model import LoadedModel, SessionSettings, load_model
from .options import ServerOptions
from .protocol import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH,
    JSON_CONTENT_TYPE,
    InferRequest,
    TensorSpec,
    decode_request,
    encode_response,
    model_metadata,
    parse_header_length,
)

log = logging.getLogger(__name__)

SERVER_NAME = "kubeserve-onnxruntime"
MODEL_VERSION = "1"  # one model file, one version; clients may name it in the URL
EXTENSIONS = ("binary_tensor_data",)

# Turns a request of some protocol into an InferRequest checked against the model's inputs and
# outputs (raising BadRequest); the gRPC server passes one (grpc_codec.decode_request).
Decoder = Callable[[Mapping[str, TensorSpec], Mapping[str, TensorSpec]], InferRequest]


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = JSON_CONTENT_TYPE
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, doc: dict[str, Any]) -> Reply:
    return Reply(status, jsoncodec.dumps(doc))


def error_reply(status: int, message: str) -> Reply:
    return json_reply(status, {"error": message})


class InferenceService:
    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.metrics = ServerMetrics(options.model_name)
        self.model: LoadedModel | None = None
        self.batcher: Batcher | None = None
        self._inputs: dict[str, TensorSpec] = {}
        self._outputs: dict[str, TensorSpec] = {}
        # One thread: loading, warm-up and every session call run there, one at a time, so
        # ORT's own intra-op threads are not fighting a second concurrent call for the cores.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx-infer")
        self._ready = asyncio.Event()
        self._draining = False

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def is_ready(self) -> bool:
        return self._ready.is_set() and not self._draining

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def load(self) -> None:
        """Load the session, warm it up, start the batcher, then report ready."""
        options = self.options
        loop = asyncio.get_running_loop()
        self.metrics.read_storage_report(options.model_dir)
        settings = SessionSettings(
            intra_op_threads=options.intra_op_threads,
            inter_op_threads=options.inter_op_threads,
            graph_optimization_level=options.graph_optimization_level,
            device=options.device,
            spinning=options.intra_op_spinning,
            execution_provider=options.execution_provider,
        )
        started = time.perf_counter()
        model = await loop.run_in_executor(self._executor, load_model, options.model_path, settings)
        load_seconds = time.perf_counter() - started
        self.metrics.load_seconds.labels(options.model_name).set(load_seconds)
        self.metrics.intra_op_threads.labels(options.model_name).set(model.intra_op_threads)
        self.model = model
        self._inputs = {spec.name: spec for spec in model.inputs}
        self._outputs = {spec.name: spec for spec in model.outputs}
        log.info(
            "loaded %s in %.3f s on %s; inputs %s; outputs %s",
            options.model_path,
            load_seconds,
            ", ".join(model.providers),
            [spec.metadata() for spec in model.inputs],
            [spec.metadata() for spec in model.outputs],
        )

        if options.warmup:
            started = time.perf_counter()
            try:
                await loop.run_in_executor(self._executor, model.warmup)
            except Exception as exc:
                # The model loaded; only our synthetic input (zeros, dynamic dims = 1) did not
                # suit it. Refusing to serve would turn a valid model into a crash loop.
                log.warning("warm-up inference failed, serving anyway: %s", exc)
            warmup_seconds = time.perf_counter() - started
            self.metrics.warmup_seconds.labels(options.model_name).set(warmup_seconds)
            log.info("warm-up inference took %.3f s", warmup_seconds)

        self.batcher = Batcher(
            model.run,
            self._executor,
            max_batch_size=options.max_batch_size,
            max_delay_s=options.max_batch_delay_ms / 1000.0,
            mergeable=model.batch_dim_is_dynamic,
            observe=self.metrics.observe_batch,
            inline_max_s=options.inline_max_ms / 1000.0,
        )
        if options.max_batch_size > 1 and not self.batcher.merges:
            log.warning(
                "--max-batch-size %d ignored: the model's first dimension is not "
                "dynamic on every input and output, so requests run one by one",
                options.max_batch_size,
            )
        self.batcher.start()
        self._ready.set()

    @property
    def draining(self) -> bool:
        return self._draining

    def start_draining(self) -> None:
        """Report not-ready (so load balancers stop sending) while in-flight requests finish.

        Infer requests are still served while draining: one that reaches us now was already
        on its way (a keep-alive connection, a body still uploading), and the model is still
        loaded. Refusing it would drop a request the client has no reason to retry.
        """
        self._draining = True

    async def close(self) -> None:
        self._draining = True
        if self.batcher is not None:
            await self.batcher.close()
        # Do not wait for a session call still running: its requests already got their 503.
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- requests --------------------------------------------------------------------------

    def check_model(self, name: str, version: str | None = None) -> None:
        if name != self.options.model_name:
            raise ModelNotFound(
                f"model '{name}' is not served here; this server serves '{self.options.model_name}'"
            )
        if version is not None and version != MODEL_VERSION:
            raise ModelNotFound(
                f"model '{name}' has no version '{version}'; it has version '{MODEL_VERSION}'"
            )

    def server_metadata(self) -> Reply:
        return json_reply(
            200, {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}
        )

    def model_metadata(self, name: str, version: str | None = None) -> Reply:
        try:
            self.check_model(name, version)
            if self.model is None:
                raise NotReady(f"model '{name}' is still loading")
        except ServingError as exc:
            return error_reply(exc.status, exc.message)
        return json_reply(
            200, model_metadata(name, MODEL_VERSION, self.model.inputs, self.model.outputs)
        )

    def model_ready(self, name: str, version: str | None = None) -> Reply:
        try:
            self.check_model(name, version)
        except ServingError as exc:
            return error_reply(exc.status, exc.message)
        return json_reply(200 if self.is_ready else 503, {"name": name, "ready": self.is_ready})

    def too_large(self, size: int | None) -> Reply:
        """413, counted like any other infer reply."""
        limit = self.options.max_body_bytes
        told = f"{size} bytes" if size is not None else "the body"
        error = PayloadTooLarge(f"{told} exceeds --max-body-bytes {limit}")
        self.metrics.observe_request(error.status, 0.0)
        return error_reply(error.status, error.message)

    async def infer(
        self, name: str, version: str | None, body: bytes, header_length: str | None
    ) -> Reply:
        started = time.perf_counter()
        try:
            self.check_model(name, version)
        except ServingError as exc:
            # Not counted: the model label would be whatever name a client made up.
            return error_reply(exc.status, exc.message)
        try:
            reply = await self._infer(name, body, header_length)
        except ServingError as exc:
            reply = error_reply(exc.status, exc.message)
        except Exception as exc:  # a bug of ours must fail this request only
            log.exception("unexpected error in an infer request")
            reply = error_reply(500, f"internal error: {type(exc).__name__}: {exc}")
        self.metrics.observe_request(reply.status, time.perf_counter() - started)
        return reply

    async def _infer(self, name: str, body: bytes, header_length: str | None) -> Reply:
        if not self._ready.is_set() or self.batcher is None:  # draining still serves
            raise NotReady(f"model '{name}' is not ready")
        if len(body) > self.options.max_body_bytes:
            raise PayloadTooLarge(
                f"{len(body)} bytes exceeds --max-body-bytes {self.options.max_body_bytes}"
            )
        if not body:
            raise BadRequest("the request body is empty")
        request = decode_request(
            body, parse_header_length(header_length, len(body)), self._inputs, self._outputs
        )
        outputs = await self.batcher.submit(request.inputs)
        payload, json_length = encode_response(
            name,
            MODEL_VERSION,
            request.id,
            [(wanted, outputs[wanted.name]) for wanted in request.outputs],
        )
        if json_length is None:
            return Reply(200, payload)
        return Reply(200, payload, BINARY_CONTENT_TYPE, {HEADER_LENGTH: str(json_length)})

    async def infer_tensors(
        self, name: str, version: str | None, decode: Decoder
    ) -> tuple[InferRequest, dict[str, np.ndarray]]:
        """The protocol-neutral infer, for the gRPC server: check the model, decode and validate
        the request with `decode`, then run it through the same batcher as HTTP requests (so
        both protocols are merged into the same session calls). Returns the request and all of
        the model's outputs; raises ServingError. Counted in the metrics like `infer`, with the
        HTTP status the failure maps to; an unknown model name is not counted (see `infer`).
        """
        started = time.perf_counter()
        self.check_model(name, version)
        try:
            if not self._ready.is_set() or self.batcher is None:  # draining still serves
                raise NotReady(f"model '{name}' is not ready")
            request = decode(self._inputs, self._outputs)
            outputs = await self.batcher.submit(request.inputs)
        except ServingError as exc:
            self.metrics.observe_request(exc.status, time.perf_counter() - started)
            raise
        except Exception as exc:  # a bug of ours must fail this request only
            log.exception("unexpected error in an infer request")
            self.metrics.observe_request(500, time.perf_counter() - started)
            raise InferenceFailed(f"internal error: {type(exc).__name__}: {exc}") from exc
        self.metrics.observe_request(200, time.perf_counter() - started)
        return request, outputs

    def metadata_doc(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Model metadata as a dict (the gRPC server's ModelMetadata); raises ServingError."""
        self.check_model(name, version)
        if self.model is None:
            raise NotReady(f"model '{name}' is still loading")
        return model_metadata(name, MODEL_VERSION, self.model.inputs, self.model.outputs)

    def metrics_reply(self) -> Reply:
        return Reply(200, self.metrics.render(), METRICS_CONTENT_TYPE)
