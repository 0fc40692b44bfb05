"""`python -m kubeserve.dataplane.onnx_server --model-dir DIR --model-name NAME [...]`.

Exit status: 0 after SIGTERM/SIGINT and a graceful drain, 1 if the model fails to load, 2 on bad
flags.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from .model import ModelLoadError
from .options import ServerOptions, parse_options
from .server import serve

log = logging.getLogger("kubeserve.dataplane.onnx_server")


async def _run(options: ServerOptions) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await serve(options, stop=stop)
    except ModelLoadError:
        return 1  # already logged, with its reason, where the load failed
    except OSError as exc:  # the port is taken, the host is not ours, ...
        log.error("cannot serve on %s:%d: %s", options.host, options.port, exc)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    options, log_level = parse_options(argv)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_run(options))


if __name__ == "__main__":
    sys.exit(main())
