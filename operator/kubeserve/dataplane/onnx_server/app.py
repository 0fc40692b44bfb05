"""HTTP routes of the Open Inference Protocol v2 on aiohttp, over an InferenceService.

aiohttp was chosen by measurement (docs/performance.md): within a few per cent of
starlette+uvicorn on this workload, and already a dependency of the operator (kopf).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from types import TracebackType

from aiohttp import web
from aiohttp.typedefs import Handler

from .errors import ServingError
from .options import ServerOptions
from .protocol import HEADER_LENGTH
from .service import InferenceService, Reply, error_reply

log = logging.getLogger(__name__)


class InFlight:
    """Requests inside a handler (a body still uploading included), and a wait for none."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def __enter__(self) -> None:
        self.count += 1
        self._idle.clear()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


SERVICE = web.AppKey("service", InferenceService)
IN_FLIGHT = web.AppKey("in_flight", InFlight)
LOAD_TASK: web.AppKey[asyncio.Task[None]] = web.AppKey("load_task")


def build_app(options: ServerOptions) -> web.Application:
    """The aiohttp application. Running it (any aiohttp runner) loads and warms up the model in
    the background: /v2/health/live answers at once, the ready endpoints once warm-up is done."""
    service = InferenceService(options)
    # aiohttp refuses bodies over client_max_size while reading; `infer` turns that into a 413.
    app = web.Application(client_max_size=options.max_body_bytes, middlewares=[_drain_aware])
    app[SERVICE] = service
    app[IN_FLIGHT] = InFlight()
    app.router.add_get("/v2", server_metadata)
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.router.add_get(base, model_metadata)
        app.router.add_get(base + "/ready", model_ready)
        app.router.add_post(base + "/infer", infer)
    app.router.add_get("/metrics", metrics)
    app.on_shutdown.append(_start_draining)
    app.cleanup_ctx.append(_model_lifecycle)
    return app


async def _model_lifecycle(app: web.Application) -> AsyncIterator[None]:
    service = app[SERVICE]
    task = asyncio.get_running_loop().create_task(service.load(), name="onnx-load")
    task.add_done_callback(_log_load_failure)
    app[LOAD_TASK] = task
    yield
    # Runs after in-flight requests finished (or the shutdown timeout passed).
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await service.close()


def _log_load_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the model failed to load: %s", task.exception())


async def _start_draining(app: web.Application) -> None:
    app[SERVICE].start_draining()


@web.middleware
async def _drain_aware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count requests in flight, for the drain; while draining, answer with
    `Connection: close`, so a keep-alive client sends its next request elsewhere instead of
    on a connection we are about to close."""
    app = request.app
    with app[IN_FLIGHT]:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if app[SERVICE].draining:
                exc.force_close()
            raise
    if app[SERVICE].draining:
        response.force_close()
    return response


def _respond(reply: Reply) -> web.Response:
    headers = {"Content-Type": reply.content_type, **reply.headers}
    return web.Response(status=reply.status, body=reply.body, headers=headers)


async def live(request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def ready(request: web.Request) -> web.Response:
    is_ready = request.app[SERVICE].is_ready
    return web.json_response({"ready": is_ready}, status=200 if is_ready else 503)


async def server_metadata(request: web.Request) -> web.Response:
    return _respond(request.app[SERVICE].server_metadata())


async def model_metadata(request: web.Request) -> web.Response:
    info = request.match_info
    return _respond(request.app[SERVICE].model_metadata(info["name"], info.get("version")))


async def model_ready(request: web.Request) -> web.Response:
    info = request.match_info
    return _respond(request.app[SERVICE].model_ready(info["name"], info.get("version")))


async def infer(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    name, version = request.match_info["name"], request.match_info.get("version")
    try:
        service.check_model(name, version)  # 404 before reading a body we would not use
    except ServingError as exc:
        return _respond(error_reply(exc.status, exc.message))
    declared = request.content_length
    if declared is not None and declared > service.options.max_body_bytes:
        return _too_large(service, declared)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:  # chunked bodies: only known while reading
        return _too_large(service, None)
    return _respond(await service.infer(name, version, body, request.headers.get(HEADER_LENGTH)))


def _too_large(service: InferenceService, size: int | None) -> web.Response:
    response = _respond(service.too_large(size))
    # The unread rest of the body is still on the wire: close rather than drain it.
    response.force_close()
    return response


async def metrics(request: web.Request) -> web.Response:
    return _respond(request.app[SERVICE].metrics_reply())
