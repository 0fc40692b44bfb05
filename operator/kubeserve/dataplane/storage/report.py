"""The storage initializer's timing report: one JSON line in the container's termination message.

A contract with the operator, which reads it from the pod's status
(``status.initContainerStatuses[].state.terminated.message``), so the pod needs no API
credentials to report. Standard library only: the operator imports this module without the
storage extras (fsspec, s3fs).

    {"downloadSeconds": 1.234, "bytes": 5242880, "cache": "miss"}

- ``downloadSeconds``: seconds the initializer spent making the model ready (fetch from the
  source or copy from the cache, unpack, layout check), 3 decimals; 0 when nothing was
  fetched (``present``).
- ``bytes``: the size of the model it left in the model directory.
- ``cache``: ``off`` (no cache configured), ``miss`` (fetched from the source: the cache was
  filled, or the model was too big for it or had no content version), ``hit`` (copied from the
  cache, nothing downloaded), ``present`` (the model directory already held the model, e.g.
  after a restart of the pod's containers).

Nothing else goes in: never the URI (a query may be a presigned signature), never a secret.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DOWNLOAD_SECONDS = "downloadSeconds"
BYTES = "bytes"
CACHE = "cache"

CACHE_OFF = "off"
CACHE_MISS = "miss"
CACHE_HIT = "hit"
CACHE_PRESENT = "present"
CACHE_STATES = (CACHE_OFF, CACHE_MISS, CACHE_HIT, CACHE_PRESENT)

# The kubelet's default terminationMessagePath; it bind-mounts the file into the container.
DEFAULT_PATH = "/dev/termination-log"
PATH_ENV = "KUBESERVE_TERMINATION_LOG"
# The kubelet keeps at most 4096 bytes of a termination message.
MAX_BYTES = 4096


def format_report(seconds: float, size: int, cache: str) -> str:
    if cache not in CACHE_STATES:
        raise ValueError(f"unknown cache state {cache!r}")
    record = {DOWNLOAD_SECONDS: round(max(seconds, 0.0), 3), BYTES: int(size), CACHE: cache}
    return json.dumps(record, separators=(",", ":"))


def parse_report(text: Any) -> dict[str, Any] | None:
    """The report in ``text`` (a termination message), or None for anything else.

    Tolerant: a message from an older initializer, a truncated or foreign message, or a
    value of the wrong type yields None rather than an exception. Unknown keys are dropped.
    """
    if not isinstance(text, str) or len(text) > MAX_BYTES:
        return None
    try:
        data = json.loads(text.strip())
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    seconds, size, cache = data.get(DOWNLOAD_SECONDS), data.get(BYTES), data.get(CACHE)
    # bool is an int in Python; JSON true is not a size.
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return None
    if cache not in CACHE_STATES:
        return None
    return {DOWNLOAD_SECONDS: float(seconds), BYTES: size, CACHE: cache}


def write_report(text: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Write ``text`` to the termination message file; False when there is none to write.

    The default path is written only if it exists (the kubelet creates it), so a local run
    leaves nothing in /dev; a path from the environment only if its directory exists.
    """
    data = text.encode()
    if len(data) > MAX_BYTES:
        raise ValueError("a termination message holds at most 4096 bytes")
    configured = environ.get(PATH_ENV)
    path = Path(configured or DEFAULT_PATH)
    if not (path.parent.is_dir() if configured else path.exists()):
        return False
    try:
        path.write_bytes(data)
    except OSError:
        return False
    return True
