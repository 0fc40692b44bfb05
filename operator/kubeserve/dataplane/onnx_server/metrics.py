"""Prometheus metrics of one server, in a registry of its own.

A per-server CollectorRegistry (not prometheus_client's global one) lets several servers live in
one process, as they do in the tests and in `kubeserve serve`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

log = logging.getLogger(__name__)

# Written by the storage initializer next to the model: {"uri": ..., "bytes": int, "seconds": f}.
STORAGE_REPORT = ".kubeserve-storage.json"

# Sub-millisecond buckets: a small model answers in well under the client library's default 5 ms.
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServerMetrics:
    def __init__(self, model: str) -> None:
        self.model = model
        self.registry = CollectorRegistry()
        # CPU and memory of the server process, handy next to request rates.
        ProcessCollector(registry=self.registry)
        labels = ["model"]
        self.requests = Counter(
            "kubeserve_inference_requests_total",
            "Inference requests answered, by HTTP status code.",
            ["model", "code"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "kubeserve_inference_request_duration_seconds",
            "Time from receiving an infer request's body to having its response ready.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_duration = Histogram(
            "kubeserve_inference_queue_duration_seconds",
            "Time a validated request waited for its batch to start running.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "kubeserve_inference_batch_size",
            "Rows along axis 0 in each ONNX Runtime session call (1 per call when the model "
            "cannot be batched).",
            labels,
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.load_seconds = Gauge(
            "kubeserve_model_load_seconds",
            "Seconds to create the ONNX Runtime session.",
            labels,
            registry=self.registry,
        )
        self.intra_op_threads = Gauge(
            "kubeserve_onnxruntime_intra_op_threads",
            "Intra-op threads the ONNX Runtime session was created with: --intra-op-threads, "
            "else the container's CPU limit rounded up (0: ONNX Runtime's default, one per core).",
            labels,
            registry=self.registry,
        )
        self.warmup_seconds = Gauge(
            "kubeserve_model_warmup_seconds",
            "Seconds of the warm-up inference run before the model reports ready.",
            labels,
            registry=self.registry,
        )
        self.download_seconds = Gauge(
            "kubeserve_model_download_seconds",
            "Seconds the storage initializer took to fetch the model.",
            labels,
            registry=self.registry,
        )
        self.download_bytes = Gauge(
            "kubeserve_model_download_bytes",
            "Bytes the storage initializer fetched.",
            labels,
            registry=self.registry,
        )

        # Labelled children resolved once: `.labels()` costs a lock and a dict lookup per call.
        self._request_duration = self.request_duration.labels(model)
        self._queue_duration = self.queue_duration.labels(model)
        self._batch_size = self.batch_size.labels(model)
        self._requests_by_code: dict[int, Any] = {}

    def observe_request(self, code: int, seconds: float) -> None:
        counter = self._requests_by_code.get(code)
        if counter is None:
            counter = self._requests_by_code[code] = self.requests.labels(self.model, str(code))
        counter.inc()
        self._request_duration.observe(seconds)

    def observe_batch(self, rows: int, queue_seconds: Sequence[float]) -> None:
        self._batch_size.observe(rows)
        for seconds in queue_seconds:
            self._queue_duration.observe(seconds)

    def read_storage_report(self, model_dir: Path) -> None:
        """Export the storage initializer's download figures, if it left any."""
        path = model_dir / STORAGE_REPORT
        if not path.is_file():
            return
        try:
            report = json.loads(path.read_text())
            seconds = float(report["seconds"])
            size = float(report["bytes"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable %s: %s", path, exc)
            return
        self.download_seconds.labels(self.model).set(seconds)
        self.download_bytes.labels(self.model).set(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)
