"""Run the app on a TCP socket: bind, load, report ready, drain on stop."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from .app import IN_FLIGHT, LOAD_TASK, SERVICE, build_app
from .options import ServerOptions
from .service import InferenceService

if TYPE_CHECKING:
    from .grpc_app import GrpcServer

log = logging.getLogger(__name__)


class OnnxServer:
    """One server in the current event loop.

    `start()` binds the port (so /v2/health/live answers at once) and starts loading the model in
    the background; `wait_ready()` returns once the model is loaded and warmed up, or raises the
    load error; `stop()` drains (see there), then frees the model. With `options.grpc_port`
    set, `start()` also binds the gRPC server (grpc_app.py) in this loop, over the same service.
    """

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.app = build_app(options)
        self._runner: web.AppRunner | None = None
        self.grpc: GrpcServer | None = None

    @property
    def service(self) -> InferenceService:
        return self.app[SERVICE]

    @property
    def port(self) -> int:
        """The bound port; differs from options.port when that is 0."""
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("the server is not started")
        return int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        host = self.options.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def grpc_port(self) -> int:
        """The bound gRPC port; RuntimeError when gRPC is off or not started."""
        if self.grpc is None:
            raise RuntimeError("the gRPC server is not started")
        return self.grpc.port

    @property
    def grpc_address(self) -> str:
        """HOST:PORT of the gRPC server, as gRPC clients take it."""
        if self.grpc is None:
            raise RuntimeError("the gRPC server is not started")
        return self.grpc.address

    async def start(self) -> None:
        runner = web.AppRunner(
            self.app,
            handle_signals=False,  # the caller owns signals (see __main__)
            access_log=None,  # a log line per request costs more than the request at small sizes
            shutdown_timeout=self.options.shutdown_timeout_s,
        )
        await runner.setup()  # starts the app, and with it the background model load
        try:
            site = web.TCPSite(runner, self.options.host, self.options.port, reuse_address=True)
            await site.start()
            if self.options.grpc_port is not None:
                # Imported only here: it registers the `inference.*` protobuf messages (grpc_app).
                from .grpc_app import GrpcServer

                grpc_server = GrpcServer(self.service, self.options)
                await grpc_server.start()
                self.grpc = grpc_server
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def wait_ready(self) -> None:
        # shield: a caller giving up waiting must not cancel the load itself.
        await asyncio.shield(self.app[LOAD_TASK])

    async def stop(self) -> None:
        """Drain, then close: what SIGTERM does.

        Readiness turns 503 and the listener closes (new connections are refused, which any
        client may safely retry), but connections already open keep being served: requests
        in flight finish, a body still uploading is read to its end, and a request that
        arrives on a kept-alive connection meanwhile is answered too, each with
        `Connection: close`. Once no request is in flight (or after
        `options.shutdown_timeout_s`), aiohttp's own shutdown closes the idle connections,
        gives a request that slipped in at that moment as long again, and frees the model.

        aiohttp's shutdown alone is not enough: it stops reading every connection at once,
        so the rest of a body still on its way was dropped and its request hung until the
        timeout, and requests read in the same moment got a 503.
        """
        if self._runner is None:
            return
        runner, self._runner = self._runner, None
        self.service.start_draining()
        # gRPC drains beside HTTP: health turns NOT_SERVING, new calls are refused (a client
        # retries them elsewhere), calls in flight finish; all before the model is freed.
        grpc_stopped = None
        if self.grpc is not None:
            grpc_stop = self.grpc.stop(self.options.shutdown_timeout_s)
            grpc_stopped = asyncio.get_running_loop().create_task(grpc_stop)
        for site in runner.sites:
            await site.stop()
        await asyncio.sleep(0)  # requests already read start their handlers first
        in_flight = self.app[IN_FLIGHT]
        try:
            await asyncio.wait_for(in_flight.wait_idle(), self.options.shutdown_timeout_s)
        except TimeoutError:
            log.warning(
                "%d requests still in flight after %.0f s; closing",
                in_flight.count,
                self.options.shutdown_timeout_s,
            )
        if grpc_stopped is not None:
            await grpc_stopped
        await runner.cleanup()


async def serve(
    options: ServerOptions,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set or the task is cancelled, then shut down gracefully.

    `ready` is set once the model is loaded and warmed up. A model that fails to load raises
    (ModelLoadError) after the port is released.
    """
    server = OnnxServer(options)
    await server.start()
    cancelled = False
    try:
        log.info("listening on %s; loading model %r", server.url, options.model_name)
        await server.wait_ready()
        log.info(
            "model %r is ready at %s/v2/models/%s/infer",
            options.model_name,
            server.url,
            options.model_name,
        )
        if server.grpc is not None:
            log.info(
                "gRPC (inference.GRPCInferenceService, grpc.health.v1.Health) at %s",
                server.grpc_address,
            )
        if ready is not None:
            ready.set()
        await (stop.wait() if stop is not None else asyncio.get_running_loop().create_future())
    except asyncio.CancelledError:
        # Uncancel so the graceful drain below is not cut short, then re-raise after it.
        cancelled = True
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
    finally:
        log.info(
            "shutting down: draining in-flight requests (at most %.0f s)",
            options.shutdown_timeout_s,
        )
        await server.stop()
    if cancelled:
        raise asyncio.CancelledError
