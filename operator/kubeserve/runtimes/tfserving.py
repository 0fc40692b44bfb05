"""TensorFlow Serving: the official binary in our image (images/tfserving).

Shutdown: tensorflow_model_server has no graceful shutdown on SIGTERM
(tensorflow/serving#1853): requests in flight are not waited for. The pod's preStop sleep
(resources/deployment.py) is what we can do from outside: the endpoints forget the pod before
SIGTERM, so little is in flight by then. A real drain would have to be the server's own.

Warm-up: `kubeserve package --format savedmodel` writes <version>/assets.extra/
tf_serving_warmup_requests, which the server replays before it marks the version AVAILABLE;
the readiness probe (model metadata) therefore passes only once the model is warm.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api import MetricType, ModelDeployment, Runtime
from ..cpu import Threads, tfserving_threads
from .base import (
    CONFIG_DIR,
    MODEL_DIR,
    SERVER_CONTAINER,
    BuildContext,
    MetricsEndpoint,
    Port,
    PromSeries,
    container_ports,
    http_probe,
    startup_probe,
    tcp_probe,
)

GRPC_PORT = 8500
REST_PORT = 8501
METRICS_PATH = "/monitoring/prometheus/metrics"
MONITORING_FILE = "monitoring_config.txt"
BATCHING_FILE = "batching_parameters.txt"
DEFAULT_BATCH_THREADS = 4  # num_batch_threads without spec.tfserving.batchThreads
DEFAULT_ENQUEUED_BATCHES = 1000


class TFServing:
    runtime = Runtime.TFSERVING
    ports = (Port("http", REST_PORT, 8080), Port("grpc", GRPC_PORT, 9000))
    metrics = MetricsEndpoint(port="http", path=METRICS_PATH)
    model_layout = "<version>/saved_model.pb (numeric version directories) in the model directory"

    def container(self, md: ModelDeployment, ctx: BuildContext) -> dict[str, Any]:
        args = [
            f"--port={GRPC_PORT}",
            f"--rest_api_port={REST_PORT}",
            f"--model_name={md.model_name}",
            f"--model_base_path={MODEL_DIR}",
            f"--monitoring_config_file={CONFIG_DIR}/{MONITORING_FILE}",
        ]
        if md.spec.batching:
            args += [
                "--enable_batching=true",
                f"--batching_parameters_file={CONFIG_DIR}/{BATCHING_FILE}",
            ]
        if md.spec.tfserving and md.spec.tfserving.xla:
            # tensorflow_model_server 2.x's own flag (model_servers/main.cc): without it the
            # server calls DisableXlaCompilation(), and jit_compile=True functions fail.
            args.append("--xla_cpu_compilation_enabled=true")
        args += thread_args(thread_settings(md, ctx.cpu_budget))
        return {
            "name": SERVER_CONTAINER,
            "image": ctx.image,
            "imagePullPolicy": ctx.image_pull_policy,
            "args": args,
            "ports": container_ports(self.ports),
            "startupProbe": startup_probe(tcp_probe("grpc", period=5, failures=1)),
            # Model metadata answers 200 only once the servable is loaded; /v1/models/NAME
            # already says 200 while it is still LOADING.
            "readinessProbe": http_probe(
                f"/v1/models/{md.model_name}/metadata", "http", period=5, failures=3
            ),
            "livenessProbe": tcp_probe("grpc", period=10, failures=3),
        }

    def config_files(self, md: ModelDeployment, ctx: BuildContext) -> Mapping[str, str]:
        monitoring = f'prometheus_config {{\n  enable: true,\n  path: "{METRICS_PATH}"\n}}\n'
        files = {MONITORING_FILE: monitoring}
        if md.spec.batching:
            files[BATCHING_FILE] = batching_parameters(md)
        return files

    def series(self, metric: MetricType) -> PromSeries | None:
        return _SERIES.get(metric)


def thread_settings(md: ModelDeployment, cpu_budget: int | None) -> Threads:
    threads = md.spec.threads
    return tfserving_threads(
        cpu_budget,
        intra_op=threads.intra_op if threads else None,
        inter_op=threads.inter_op if threads else None,
    )


def thread_args(threads: Threads) -> list[str]:
    """Flags for what is known; the rest stays TF's default (one thread per core)."""
    args = []
    if threads.intra_op:
        args.append(f"--tensorflow_intra_op_parallelism={threads.intra_op}")
    if threads.inter_op:
        args.append(f"--tensorflow_inter_op_parallelism={threads.inter_op}")
    return args


def batching_parameters(md: ModelDeployment) -> str:
    """The BatchingParameters text proto (tensorflow_serving/servables/tensorflow/
    session_bundle_config.proto): wrapped values, except the plain bool
    pad_variable_length_inputs."""
    batching, tfs = md.spec.batching, md.spec.tfserving
    assert batching is not None
    threads = tfs.batch_threads if tfs and tfs.batch_threads else DEFAULT_BATCH_THREADS
    queue = (
        tfs.max_enqueued_batches if tfs and tfs.max_enqueued_batches else DEFAULT_ENQUEUED_BATCHES
    )
    text = (
        f"max_batch_size {{ value: {batching.max_batch_size} }}\n"
        f"batch_timeout_micros {{ value: {round(batching.max_delay_ms * 1000)} }}\n"
        f"max_enqueued_batches {{ value: {queue} }}\n"
        f"num_batch_threads {{ value: {threads} }}\n"
    )
    if tfs and tfs.pad_variable_length_inputs:
        text += "pad_variable_length_inputs: true\n"
    return text


_SERIES = {
    # TF Serving's counters: request_count, and the request_latency histogram in microseconds.
    # It exports no queue-time metric, so queueLatency is the mean request latency, which
    # includes time queued for a batch.
    MetricType.REQUESTS_PER_SECOND: PromSeries(
        "kubeserve_tfserving_requests_per_second",
        "sum{by}(rate(:tensorflow:serving:request_count{{{selector}}}[2m]))",
    ),
    MetricType.QUEUE_LATENCY: PromSeries(
        "kubeserve_tfserving_request_latency_ms",
        "1e-3 * sum{by}(rate(:tensorflow:serving:request_latency_sum{{{selector}}}[2m]))"
        " / clamp_min(sum{by}(rate(:tensorflow:serving:request_latency_count{{{selector}}}[2m])),"
        " 1e-9)",
    ),
    # Little's law: latency-seconds accrued per second = requests in flight.
    MetricType.CONCURRENCY: PromSeries(
        "kubeserve_tfserving_concurrency",
        "1e-6 * sum{by}(rate(:tensorflow:serving:request_latency_sum{{{selector}}}[2m]))",
    ),
}
