"""ONNX Runtime through our own Open Inference Protocol v2 server (images/onnxruntime)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api import MetricType, ModelDeployment, Runtime
from ..cpu import Threads, onnxruntime_threads
from .base import (
    MODEL_DIR,
    SERVER_CONTAINER,
    BuildContext,
    MetricsEndpoint,
    Port,
    PromSeries,
    container_ports,
    http_probe,
    startup_probe,
)

HTTP_PORT = 8080
# The Open Inference Protocol v2 over gRPC; 9000 is the Service's gRPC port for every runtime
# (TF Serving's 8500 is exposed as 9000 too).
GRPC_PORT = 9000


class OnnxRuntime:
    runtime = Runtime.ONNXRUNTIME
    ports = (Port("http", HTTP_PORT, 8080), Port("grpc", GRPC_PORT, 9000))
    metrics = MetricsEndpoint(port="http", path="/metrics")
    model_layout = "model.onnx at the root of the model directory"

    def container(self, md: ModelDeployment, ctx: BuildContext) -> dict[str, Any]:
        batching = md.spec.batching
        options = md.spec.session_options
        args = [
            f"--model-dir={MODEL_DIR}",
            f"--model-name={md.model_name}",
            "--host=0.0.0.0",
            f"--port={HTTP_PORT}",
            f"--grpc-port={GRPC_PORT}",
            f"--device={'cuda' if ctx.gpu else 'cpu'}",
        ]
        if batching:
            args += [
                f"--max-batch-size={batching.max_batch_size}",
                f"--max-batch-delay-ms={batching.max_delay_ms:g}",
            ]
        threads = thread_settings(md, ctx.cpu_budget)
        if threads.intra_op:
            args.append(f"--intra-op-threads={threads.intra_op}")
        if threads.inter_op:
            args.append(f"--inter-op-threads={threads.inter_op}")
        if options:
            args.append(f"--graph-optimization-level={options.graph_optimization_level.value}")
        provider = options.execution_provider if options else None
        if provider:
            # Strict: the server refuses to start without this provider (no CPU fallback).
            args.append(f"--execution-provider={provider.value.lower()}")
        return {
            "name": SERVER_CONTAINER,
            "image": ctx.image,
            "imagePullPolicy": ctx.image_pull_policy,
            "args": args,
            "ports": container_ports(self.ports),
            "env": [{"name": "ORT_DISABLE_TELEMETRY", "value": "1"}],
            "startupProbe": startup_probe(
                http_probe("/v2/health/live", "http", period=5, failures=1)
            ),
            "readinessProbe": http_probe("/v2/health/ready", "http", period=5, failures=3),
            "livenessProbe": http_probe("/v2/health/live", "http", period=10, failures=3),
        }

    def config_files(self, md: ModelDeployment, ctx: BuildContext) -> Mapping[str, str]:
        return {}

    def series(self, metric: MetricType) -> PromSeries | None:
        return _SERIES.get(metric)


def thread_settings(md: ModelDeployment, cpu_budget: int | None) -> Threads:
    """spec.threads, else sessionOptions' counts (the API admits one of the two), else the
    budget. Without a budget the server reads its cgroup's CPU limit itself."""
    threads, options = md.spec.threads, md.spec.session_options
    return onnxruntime_threads(
        cpu_budget,
        intra_op=(threads and threads.intra_op) or (options and options.intra_op_threads) or None,
        inter_op=(threads and threads.inter_op) or (options and options.inter_op_threads) or None,
    )


_SERIES = {
    # Our server's metrics (dataplane/onnx_server/metrics.py): a request counter and two
    # histograms in seconds.
    MetricType.REQUESTS_PER_SECOND: PromSeries(
        "kubeserve_onnxruntime_requests_per_second",
        "sum{by}(rate(kubeserve_inference_requests_total{{{selector}}}[2m]))",
    ),
    MetricType.QUEUE_LATENCY: PromSeries(
        "kubeserve_onnxruntime_queue_latency_ms",
        "1000 * sum{by}(rate(kubeserve_inference_queue_duration_seconds_sum{{{selector}}}[2m]))"
        " / clamp_min(sum{by}(rate(kubeserve_inference_queue_duration_seconds_count"
        "{{{selector}}}[2m])), 1e-9)",
    ),
    # Little's law: latency-seconds accrued per second = requests in flight.
    MetricType.CONCURRENCY: PromSeries(
        "kubeserve_onnxruntime_concurrency",
        "sum{by}(rate(kubeserve_inference_request_duration_seconds_sum{{{selector}}}[2m]))",
    ),
}
