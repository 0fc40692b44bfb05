"""The Open Inference Protocol v2 over gRPC (`inference.GRPCInferenceService`) and the standard
`grpc.health.v1.Health` service, on grpcio's asyncio server.

It runs in the same event loop as the HTTP server, over the same InferenceService: one model,
one batcher, so requests of both protocols are merged into the same ONNX Runtime calls, and
counted in the same metrics (with the HTTP status their outcome maps to).

Failures keep their meaning across protocols (errors.py's HTTP status -> gRPC status code):
400 INVALID_ARGUMENT, 404 NOT_FOUND, 413 RESOURCE_EXHAUSTED (grpcio itself answers so for a
message over --max-body-bytes), 500 INTERNAL, 503 UNAVAILABLE.

Health: the overall service ("") and "inference.GRPCInferenceService" are NOT_SERVING until the
model is loaded and warmed up, SERVING then, and NOT_SERVING again once draining starts: the
same meaning as /v2/health/ready, so a Kubernetes gRPC readiness probe may use it.

Importing this module registers the `inference.*` messages in protobuf's default descriptor
pool, as tritonclient.grpc and KServe do with their own copies: server.py imports it only when
gRPC is on, so in-process HTTP users never clash with those clients.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from kubeserve import __version__

from . import grpc_codec
from .errors import ServingError
from .oip import inference_pb2 as pb
from .oip import inference_pb2_grpc as pb_grpc
from .options import ServerOptions
from .service import EXTENSIONS, MODEL_VERSION, SERVER_NAME, InferenceService

log = logging.getLogger(__name__)

SERVICE_NAME = "inference.GRPCInferenceService"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

STATUS_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: ServingError) -> NoReturn:
    await context.abort(STATUS_CODES.get(error.status, grpc.StatusCode.INTERNAL), error.message)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


class InferenceServicer:
    """GRPCInferenceService's six methods over an InferenceService (grpcio calls them by name)."""

    def __init__(self, service: InferenceService) -> None:
        self.service = service

    async def ServerLive(  # the method names are the protocol's
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.service.is_ready)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelReadyResponse:
        try:
            self.service.check_model(request.name, request.version or None)
        except ServingError as exc:
            await _abort(context, exc)
        return pb.ModelReadyResponse(ready=self.service.is_ready)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=__version__, extensions=list(EXTENSIONS)
        )

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelMetadataResponse:
        try:
            doc = self.service.metadata_doc(request.name, request.version or None)
        except ServingError as exc:
            await _abort(context, exc)
        return grpc_codec.model_metadata(doc)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelInferResponse:
        name = request.model_name
        try:
            decoded, outputs = await self.service.infer_tensors(
                name,
                request.model_version or None,
                lambda inputs, wanted: grpc_codec.decode_request(request, inputs, wanted),
            )
        except ServingError as exc:
            await _abort(context, exc)
        try:
            return grpc_codec.encode_response(name, MODEL_VERSION, decoded, outputs)
        except Exception as exc:  # a bug of ours: INTERNAL with its message, never UNKNOWN
            log.exception("unexpected error while encoding a gRPC infer response")
            await context.abort(
                grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
            )
            raise


class GrpcServer:
    """The gRPC listener of one OnnxServer: start() binds, stop() drains."""

    def __init__(self, service: InferenceService, options: ServerOptions) -> None:
        self.service = service
        self.options = options
        self.health = health.aio.HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._port = 0
        self._watch: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the gRPC server is not started")
        return self._port

    @property
    def address(self) -> str:
        host = self.options.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    async def start(self) -> None:
        assert self.options.grpc_port is not None
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.options.max_body_bytes),
                ("grpc.max_send_message_length", -1),
                # grpcio sets SO_REUSEPORT by default on Linux: a second server would then bind
                # a taken port without error and steal half its connections.
                ("grpc.so_reuseport", 0),
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(  # type: ignore[no-untyped-call]
            InferenceServicer(self.service), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        host = self.options.host
        wanted = (
            f"[{host}]:{self.options.grpc_port}"
            if ":" in host
            else (f"{host}:{self.options.grpc_port}")
        )
        try:
            port = server.add_insecure_port(wanted)
        except RuntimeError as exc:  # grpcio raises this when the address cannot be bound
            raise OSError(f"cannot bind gRPC to {wanted}: {exc}") from exc
        if port == 0:  # older grpcio reported a failed bind this way
            raise OSError(f"cannot bind gRPC to {wanted}")
        for name in ("", SERVICE_NAME):
            await self.health.set(name, _NOT_SERVING)
        await server.start()
        self._server, self._port = server, port
        self._watch = asyncio.get_running_loop().create_task(
            self._serving_when_ready(), name="onnx-grpc-health"
        )

    async def _serving_when_ready(self) -> None:
        await self.service.wait_ready()
        if self.service.is_ready:  # not draining meanwhile
            for name in ("", SERVICE_NAME):
                await self.health.set(name, _SERVING)

    async def stop(self, grace_s: float) -> None:
        """Health turns NOT_SERVING, new calls are refused (clients retry elsewhere), calls
        in flight get up to `grace_s` to finish."""
        if self._server is None:
            return
        server, self._server = self._server, None
        if self._watch is not None:
            self._watch.cancel()
        await self.health.enter_graceful_shutdown()
        await server.stop(grace_s)
