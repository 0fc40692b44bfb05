#!/opt/torchserve/bin/python
"""`torchserve` for containers: upstream's CLI plus SIGTERM forwarding to the Java frontend.

Installed over the `torchserve` console script in images/torchserve, so both the image's
ENTRYPOINT and a pod that sets `command: [torchserve]` get it.

Why: `torchserve --foreground` starts Java as a child and waits for it, but installs no signal
handler. A process without a handler never receives SIGTERM when it is PID 1 (as the container
command is, in Kubernetes), so every pod stop took the whole grace period and ended in SIGKILL.
Here SIGTERM and SIGINT are forwarded to Java, whose shutdown hook stops the model workers, and
we exit once Java has.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from types import FrameType

from ts.model_server import start

# Upstream writes the Java PID here right after starting it (`torchserve --stop` reads it).
PID_FILE = os.path.join(tempfile.gettempdir(), ".model_server.pid")
_stopping = False


def _java_pid() -> int | None:
    try:
        with open(PID_FILE, encoding="ascii") as f:
            return int(f.readline().strip())
    except (OSError, ValueError):
        return None


def _forward(signum: int, _frame: FrameType | None) -> None:
    global _stopping
    _stopping = True
    pid = _java_pid()
    if pid is None:
        # Java is not started yet: nothing to stop gracefully.
        os._exit(128 + signum)
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        os._exit(128 + signum)


def main() -> int:
    sys.argv[0] = "torchserve"
    foreground = "--foreground" in sys.argv[1:]
    if foreground:
        signal.signal(signal.SIGTERM, _forward)
        signal.signal(signal.SIGINT, _forward)
    start()
    if foreground and not _stopping:
        # A server in the foreground must not end on its own: Java failed or exited.
        print("torchserve: the Java frontend exited", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
