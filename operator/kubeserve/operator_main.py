"""`kubeserve run`: logging, the metrics endpoint, then kopf's operator loop."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import kopf
from prometheus_client import start_http_server


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the object's namespace/name when kopf knows it."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # kopf's per-object loggers attach the object reference as `k8s_ref`.
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict):
            entry["namespace"] = ref.get("namespace")
            entry["name"] = ref.get("name")
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(log_format: str, level: str) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def run_operator(
    *,
    namespaces: Sequence[str],
    liveness: str,
    metrics_port: int,
    log_format: str,
    log_level: str,
) -> int:
    configure_logging(log_format, log_level)
    from . import handlers  # noqa: F401  (registers the handlers with kopf)

    if metrics_port:
        start_http_server(metrics_port)
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=liveness or None,
        memo=kopf.Memo(namespaced=bool(namespaces)),
    )
    return 0
