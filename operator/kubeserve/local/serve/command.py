"""`kubeserve serve -f md.yaml [--host 127.0.0.1] [--port 8080]`: flags and the main loop."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from ...api import ModelDeployment, Runtime
from ..errors import LocalError
from . import spec
from .options import LocalOptions

Runner = Callable[[ModelDeployment, Path, LocalOptions, asyncio.Event], Awaitable[None]]
DEFAULT_READY_TIMEOUT_S = 120.0


def runner(runtime: Runtime) -> Runner:
    # Imported here: the runtimes pull in aiohttp, which `kubeserve render` need not load.
    if runtime == Runtime.ONNXRUNTIME:
        from . import onnx

        return onnx.run
    if runtime == Runtime.TORCHSERVE:
        from . import torchserve

        return torchserve.run
    from . import tfserving

    return tfserving.run


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "serve",
        help="serve a ModelDeployment on this machine (no cluster)",
        description="Serve the model of a ModelDeployment on this machine with the runtime its "
        "spec names, with the same configuration the operator would give it. spec.model.uri "
        "may be a local path or file:// (relative to the YAML file); s3/gs/https URIs are "
        "fetched with the storage initializer first. Stop with Ctrl-C or SIGTERM.",
    )
    parser.add_argument("-f", "--filename", required=True, help="ModelDeployment YAML")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8080,
        help="port for the inference API (default 8080; 0 picks a free one)",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=DEFAULT_READY_TIMEOUT_S,
        metavar="SECONDS",
        help="how long a server process may take to load "
        f"the model (default {DEFAULT_READY_TIMEOUT_S:.0f})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show the server's own logs")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # For onnxruntime in this process and in every child (TorchServe imports it too).
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    if not 0 <= args.port <= 65535:
        raise LocalError(f"--port {args.port}: expected 0-65535")
    if args.ready_timeout <= 0:
        raise LocalError("--ready-timeout must be > 0")
    md = spec.load(args.filename)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return asyncio.run(serve(md, Path(args.filename).resolve().parent, args))


async def serve(md: ModelDeployment, base: Path, args: argparse.Namespace) -> int:
    from . import model_source, tfserving

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    with tempfile.TemporaryDirectory(prefix="kubeserve-serve-") as tmp:
        opts = LocalOptions(
            host=args.host,
            port=args.port,
            ready_timeout_s=args.ready_timeout,
            verbose=args.verbose,
            work_dir=Path(tmp),
        )
        if md.spec.runtime == Runtime.TFSERVING:
            # Before any download: without the binary there is nothing to fetch it for.
            path = model_source.local_path(md.spec.model.uri, base)
            where = str(path.resolve()) if path else f"<a local copy of {md.spec.model.uri}>"
            tfserving.check_installed(md, where, args.port)
        if md.spec.canary is not None:
            # Stable and canary side by side behind one weighted front on the port.
            from . import canary

            async def resolve(view: ModelDeployment, work: Path, stop: asyncio.Event) -> Path:
                return await model_source.resolve(view, base, work, stop)

            await canary.serve(md, opts, stop, runner=runner(md.spec.runtime), resolve=resolve)
            return 0
        model_dir = await model_source.resolve(md, base, Path(tmp), stop)
        if not stop.is_set():
            await runner(md.spec.runtime)(md, model_dir, opts, stop)
    return 0
