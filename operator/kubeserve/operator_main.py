"""`kubeserve run`: logging, the metrics endpoint, then kopf's operator loop."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import kopf
from prometheus_client import start_http_server

if TYPE_CHECKING:
    from .leadership import Config as LeaderElection

# The ModelDeployment (namespace, name) the current task works on, for log lines written
# outside kopf's per-object loggers (the work queue, the API client). handlers sets it.
KOPF_OBJECTS_LOGGER = "kopf.objects"
LOG_OBJECT: ContextVar[tuple[str, str] | None] = ContextVar("kubeserve_log_object", default=None)


def log_object(record: logging.LogRecord) -> tuple[str, str] | None:
    """The (namespace, name) a log record is about, if any."""
    # kopf's per-object loggers (ObjectLogger, a LoggerAdapter) put the object reference
    # in the record's extra as `k8s_ref`.
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, dict) and ref.get("name"):
        return str(ref.get("namespace") or ""), str(ref["name"])
    return LOG_OBJECT.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the object's namespace/name when the line is about one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        obj = log_object(record)
        if obj is not None:
            entry["namespace"], entry["name"] = obj
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Plain lines; those about an object start with [namespace/name], as kopf's do."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        obj = log_object(record)
        text = super().formatMessage(record)
        if obj is None:
            return text
        head, sep, message = text.partition(f"{record.name}: ")
        return f"{head}{sep}[{obj[0]}/{obj[1]}] {message}"


def configure_logging(log_format: str, level: str) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kopf logs "Handler ... succeeded." at INFO for every watch event it hands us: thousands
    # of lines a minute on a busy cluster, none about a change. Its warnings and errors stay.
    quiet = root.getEffectiveLevel() > logging.DEBUG
    logging.getLogger(KOPF_OBJECTS_LOGGER).setLevel(logging.WARNING if quiet else logging.NOTSET)


def run_operator(
    *,
    namespaces: Sequence[str],
    liveness: str,
    metrics_port: int,
    log_format: str,
    log_level: str,
    leader_election: LeaderElection | None = None,
    selector: str = "",
) -> int:
    """kopf's loop; the exit code is 1 when the Lease was lost (leadership.py)."""
    configure_logging(log_format, log_level)
    from . import handlers  # noqa: F401  (registers the handlers with kopf)

    if metrics_port:
        start_http_server(metrics_port)
    # Raised by leadership.py on losing the Lease: kopf stops as on SIGTERM, cleanup included.
    stop = asyncio.Event()
    memo = kopf.Memo(
        namespaces=list(namespaces),
        leader_election=leader_election,
        selector=selector,
        stop_flag=stop,
        exit_code=0,
    )
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=liveness or None,
        memo=memo,
        stop_flag=stop,
    )
    return int(memo.exit_code)
