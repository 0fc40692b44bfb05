"""TorchServe, from our own image (upstream TorchServe is archived; images/torchserve).

Token authorization: TorchServe 0.12 turns it on by default, which breaks every standard
client and hands the token to whoever can read the pod's files. We turn it off and instead
keep the management API on 127.0.0.1 (never in a Service), leave the model API off, and let
spec.networkPolicy restrict who reaches the inference port. docs/runtimes.md explains this.

Shutdown: TorchServe has no graceful drain (pytorch/serve#2008). Our image forwards SIGTERM
to the Java frontend (images/torchserve/torchserve_entrypoint.py), whose shutdown hook stops
the model workers without waiting for requests in flight. The pod's preStop sleep
(resources/deployment.py) is what we can do from outside: the endpoints forget the pod before
SIGTERM, so little is in flight by then. A real drain would have to be TorchServe's own.

Readiness: TorchServe 0.12's `/ping` answers 200 "Healthy" as soon as the frontend is up, while
the model's worker is still in its handler's initialize() (measured: 200 at 2 s, the worker
READY at 13 s for a handler that sleeps 10 s). Nothing on the inference port tracks the worker
(`OPTIONS /predictions/NAME` is 200 once registered; the KServe v2 routes are off unless the
Open Inference Protocol is on, and even then answer 200 with a JSON flag). The management API's
`GET /models/NAME` lists each worker's status, and it turns READY only once the model is
loaded. That API stays on 127.0.0.1, so the readiness probe is an exec probe that asks it from
inside the container. `kubeserve serve` waits on the same signal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..api import MetricType, ModelDeployment, Runtime
from ..cpu import Threads, torch_env, torchserve_threads
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

INFERENCE_PORT = 8080
MANAGEMENT_PORT = 8081
METRICS_PORT = 8082
CONFIG_FILE = "config.properties"
# torch-model-archiver's default, which `kubeserve package` keeps.
MODEL_VERSION = "1.0"
READY = "READY"  # a worker's status in GET /models/NAME once its model is loaded

# The readiness check, run by the image's Python (stdlib only, -I -S: no site-packages scan,
# so it starts in tens of ms). It exits 0 only when a worker of the model is READY; otherwise
# one short line (the kubelet shows it in the pod's events), never a traceback.
READY_SCRIPT = f"""\
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=3) as answer:
        versions = json.load(answer)
    workers = [w.get("status") for v in versions for w in v.get("workers", [])]
except Exception as exc:
    sys.exit(f"{{sys.argv[1]}}: {{exc}}")
sys.exit(0 if "{READY}" in workers else f"no {READY} worker yet: {{workers}}")
"""


class TorchServe:
    runtime = Runtime.TORCHSERVE
    ports = (Port("http", INFERENCE_PORT, 8080), Port("metrics", METRICS_PORT, 8082))
    metrics = MetricsEndpoint(port="metrics", path="/metrics")
    model_layout = "<model name>.mar in the model store (the model directory)"

    def container(self, md: ModelDeployment, ctx: BuildContext) -> dict[str, Any]:
        return {
            "name": SERVER_CONTAINER,
            "image": ctx.image,
            "imagePullPolicy": ctx.image_pull_policy,
            "args": [
                "--foreground",
                f"--ts-config={CONFIG_DIR}/{CONFIG_FILE}",
                f"--model-store={MODEL_DIR}",
                "--disable-token-auth",
            ],
            "ports": container_ports(self.ports),
            "env": [
                {"name": "ORT_DISABLE_TELEMETRY", "value": "1"},
                # TorchServe and Java write logs and temp files; only /tmp is writable.
                {"name": "LOG_LOCATION", "value": "/tmp/logs"},
                {"name": "METRICS_LOCATION", "value": "/tmp/logs"},
                {"name": "TEMP", "value": "/tmp"},
                # Threads per worker, from the CPU limit or spec.threads.intraOp.
                *torch_env(thread_settings(md, ctx.cpu_budget)),
            ],
            "startupProbe": startup_probe(http_probe("/ping", "http", period=5, failures=1)),
            # /ping is the frontend only (module docstring); readiness is the model's worker.
            "readinessProbe": {
                "exec": {
                    "command": ready_command(model_status_url(MANAGEMENT_PORT, md.model_name))
                },
                "periodSeconds": 5,
                "timeoutSeconds": 5,
                "failureThreshold": 3,
            },
            "livenessProbe": tcp_probe("http", period=10, failures=3),
        }

    def config_files(self, md: ModelDeployment, ctx: BuildContext) -> Mapping[str, str]:
        return {CONFIG_FILE: config_properties(md, gpus=_gpu_count(md) if ctx.gpu else 0)}

    def series(self, metric: MetricType) -> PromSeries | None:
        return _SERIES.get(metric)


def model_status_url(management_port: int, model_name: str) -> str:
    """The management API's description of the model, workers included (loopback only)."""
    return f"http://127.0.0.1:{management_port}/models/{model_name}"


def ready_command(url: str) -> list[str]:
    return ["python", "-I", "-S", "-c", READY_SCRIPT, url]


def has_ready_worker(description: object) -> bool:
    """READY_SCRIPT's test, for `kubeserve serve`: GET /models/NAME answers a list with one
    entry per version, each listing its workers."""
    if not isinstance(description, list):
        return False
    return any(
        isinstance(version, dict)
        and any(worker.get("status") == READY for worker in version.get("workers", []))
        for version in description
    )


def thread_settings(md: ModelDeployment, cpu_budget: int | None) -> Threads:
    """Workers from spec.threads (default 1), threads per worker: intraOp, else the budget
    divided among the workers (kubeserve.cpu)."""
    threads = md.spec.threads
    return torchserve_threads(
        cpu_budget,
        intra_op=threads.intra_op if threads else None,
        workers=threads.workers if threads else None,
    )


def _gpu_count(md: ModelDeployment) -> int:
    return md.spec.gpu.count if md.spec.gpu else 0


def config_properties(
    md: ModelDeployment,
    *,
    gpus: int = 0,
    bind: str = "0.0.0.0",
    inference_port: int = INFERENCE_PORT,
    management_port: int = MANAGEMENT_PORT,
    metrics_port: int = METRICS_PORT,
    model_store: str = MODEL_DIR,
) -> str:
    """TorchServe's config.properties; `kubeserve serve` reuses it with local ports."""
    batching = md.spec.batching
    workers = thread_settings(md, None).workers or 1
    model = {
        "marName": f"{md.model_name}.mar",
        "minWorkers": workers,
        "maxWorkers": workers,
        "batchSize": batching.max_batch_size if batching else 1,
        "maxBatchDelay": round(batching.max_delay_ms) if batching else 0,
        "responseTimeout": 120,
    }
    settings = {
        "inference_address": f"http://{bind}:{inference_port}",
        "management_address": f"http://127.0.0.1:{management_port}",
        "metrics_address": f"http://{bind}:{metrics_port}",
        # gRPC is not exposed by kubeserve; keep it off the network.
        "grpc_inference_address": "127.0.0.1",
        "grpc_management_address": "127.0.0.1",
        "grpc_inference_port": str(management_port + 1000),
        "grpc_management_port": str(management_port + 1001),
        "metrics_mode": "prometheus",
        "model_store": model_store,
        "load_models": f"{md.model_name}.mar",
        "models": json.dumps({md.model_name: {MODEL_VERSION: model}}, sort_keys=True),
        "number_of_gpu": str(gpus),
        "disable_token_authorization": "true",
        "enable_model_api": "false",
        "install_py_dep_per_model": "false",
        "enable_envvars_config": "false",
        "default_workers_per_model": str(workers),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


_SERIES = {
    # TorchServe's frontend counters (metrics_mode prometheus): ts_inference_requests_total,
    # and ts_queue_latency_microseconds / ts_inference_latency_microseconds, cumulative sums
    # in microseconds (counters, not histograms).
    MetricType.REQUESTS_PER_SECOND: PromSeries(
        "kubeserve_torchserve_requests_per_second",
        "sum{by}(rate(ts_inference_requests_total{{{selector}}}[2m]))",
    ),
    MetricType.QUEUE_LATENCY: PromSeries(
        "kubeserve_torchserve_queue_latency_ms",
        "1e-3 * sum{by}(rate(ts_queue_latency_microseconds{{{selector}}}[2m]))"
        " / clamp_min(sum{by}(rate(ts_inference_requests_total{{{selector}}}[2m])), 1e-9)",
    ),
    # Little's law: latency-seconds accrued per second = requests in flight.
    MetricType.CONCURRENCY: PromSeries(
        "kubeserve_torchserve_concurrency",
        "1e-6 * sum{by}(rate(ts_inference_latency_microseconds{{{selector}}}[2m]))",
    ),
}
