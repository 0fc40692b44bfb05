"""The Grafana dashboard the chart ships: one ModelDeployment's serving signals, cold starts
and replicas, then the operator's own health.

The runtime panels are built from the same ``PromSeries`` templates as the KEDA triggers and
the prometheus-adapter rules, so the dashboard shows exactly what the autoscaler acts on. Each
panel has one target per runtime; only the ModelDeployment's own runtime returns data.

Grafana variables: ``$datasource``, ``$namespace``, ``$modeldeployment`` (from the operator's
``kubeserve_modeldeployments_ready``) and ``$job`` (the operator's scrape job).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .api import MetricType, Runtime
from .resources.autoscaling.signals import GPU_UTILIZATION, MIG_UTILIZATION, POD_LABEL
from .runtimes import RUNTIMES

UID = "kubeserve-modeldeployments"
# The pods of the Deployment named like the ModelDeployment (names of up to 47 characters;
# longer ones are shortened with a hash, docs/monitoring.md).
MD_PODS = f'namespace="$namespace",{POD_LABEL}=~"$modeldeployment-[a-z0-9]{{1,10}}-[a-z0-9]{{5}}"'
MD_OBJECT = 'namespace="$namespace",name="$modeldeployment"'
OPERATOR = 'job=~"$job"'
WINDOW = "2m"  # the autoscalers' window
OPERATOR_WINDOW = "5m"
COLD_START_WINDOW = "1h"


@dataclass(frozen=True)
class Target:
    legend: str
    expr: str


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    targets: tuple[Target, ...]
    description: str = ""


def _per_runtime(metric: MetricType) -> tuple[Target, ...]:
    targets = []
    for runtime in Runtime:
        series = RUNTIMES[runtime].series(metric)
        if series is not None:
            targets.append(Target(runtime.value, series.query.format(by="", selector=MD_PODS)))
    return tuple(targets)


def _rate(name: str, selector: str = MD_PODS, by: str = "") -> str:
    return f"sum{by}(rate({name}{{{selector}}}[{WINDOW}]))"


def _latency_percentiles() -> tuple[Target, ...]:
    targets = []
    for quantile in ("0.5", "0.95", "0.99"):
        targets.append(
            Target(
                f"onnxruntime p{quantile[2:]}",
                f"1000 * histogram_quantile({quantile}, "
                + _rate("kubeserve_inference_request_duration_seconds_bucket", by=" by (le)")
                + ")",
            )
        )
        targets.append(
            Target(
                f"tfserving p{quantile[2:]}",
                f"1e-3 * histogram_quantile({quantile}, "
                + _rate(":tensorflow:serving:request_latency_bucket", by=" by (le)")
                + ")",
            )
        )
    # TorchServe's frontend keeps sums, not histograms: the mean is all it can give.
    targets.append(
        Target(
            "torchserve mean",
            f"1e-3 * {_rate('ts_inference_latency_microseconds')}"
            f" / clamp_min({_rate('ts_inference_requests_total')}, 1e-9)",
        )
    )
    return tuple(targets)


def model_panels() -> tuple[Panel, ...]:
    return (
        Panel("Requests per second", "reqps", _per_runtime(MetricType.REQUESTS_PER_SECOND)),
        Panel(
            "Latency",
            "ms",
            _latency_percentiles(),
            "Server-side request latency. TorchServe exports sums only, so its line is the mean.",
        ),
        Panel(
            "Queue time",
            "ms",
            _per_runtime(MetricType.QUEUE_LATENCY),
            "Mean time waiting for a batch or a worker (TF Serving: mean request latency; it "
            "exports no queue time per model).",
        ),
        Panel(
            "Requests in flight",
            "short",
            _per_runtime(MetricType.CONCURRENCY),
            "Little's law: latency-seconds served per second.",
        ),
        Panel(
            "Batch size",
            "short",
            (
                Target(
                    "onnxruntime mean rows per call",
                    f"{_rate('kubeserve_inference_batch_size_sum')}"
                    f" / clamp_min({_rate('kubeserve_inference_batch_size_count')}, 1e-9)",
                ),
            ),
            "Rows per ONNX Runtime session call. TF Serving and TorchServe export no batch size.",
        ),
        Panel(
            "GPU utilisation",
            "percent",
            (
                Target("GPU", GPU_UTILIZATION.query.format(by="", selector=MD_PODS)),
                Target("MIG", MIG_UTILIZATION.query.format(by="", selector=MD_PODS)),
            ),
            "From NVIDIA dcgm-exporter (scraped with honorLabels, so series carry the pod).",
        ),
        Panel(
            "Replicas",
            "short",
            (
                Target(
                    "{{state}}",
                    f"sum by (state)(kubeserve_modeldeployment_replicas{{{MD_OBJECT}}})",
                ),
            ),
        ),
        Panel(
            "Cold start by stage (mean, last hour)",
            "s",
            (
                Target(
                    "{{stage}}",
                    f"sum by (stage)(increase(kubeserve_cold_start_seconds_sum{{{MD_OBJECT}}}"
                    f"[{COLD_START_WINDOW}])) / clamp_min(sum by (stage)(increase("
                    f"kubeserve_cold_start_seconds_count{{{MD_OBJECT}}}[{COLD_START_WINDOW}])),"
                    " 1e-9)",
                ),
            ),
            "download: the storage initializer; startup: server start to Ready (load and "
            "warm-up); total: pod created to Ready (docs/coldstart.md).",
        ),
        Panel(
            "Cold starts (last hour)",
            "short",
            (
                Target(
                    "pods started",
                    f'sum(increase(kubeserve_cold_start_seconds_count{{{MD_OBJECT},stage="total"}}'
                    f"[{COLD_START_WINDOW}]))",
                ),
            ),
        ),
    )


def operator_panels() -> tuple[Panel, ...]:
    window = OPERATOR_WINDOW
    return (
        Panel(
            "Reconciles per second",
            "ops",
            (
                Target(
                    "{{outcome}}",
                    f"sum by (outcome)(rate(kubeserve_reconciles_total{{{OPERATOR}}}[{window}]))",
                ),
            ),
        ),
        Panel(
            "Reconcile duration p95",
            "s",
            (
                Target(
                    "p95",
                    "histogram_quantile(0.95, sum by (le)(rate("
                    f"kubeserve_reconcile_duration_seconds_bucket{{{OPERATOR}}}[{window}])))",
                ),
            ),
        ),
        Panel(
            "API requests by code",
            "reqps",
            (
                Target(
                    "{{verb}} {{code}}",
                    "sum by (verb, code)(rate("
                    f"kubeserve_api_requests_total{{{OPERATOR}}}[{window}]))",
                ),
            ),
        ),
        Panel(
            "ModelDeployments by Ready",
            "short",
            (
                Target(
                    "Ready={{status}}",
                    "sum by (status)("
                    f'kubeserve_modeldeployment_condition{{{OPERATOR},type="Ready"}})',
                ),
            ),
        ),
        Panel(
            "Leader",
            "short",
            (Target("{{instance}}", f"max by (instance)(kubeserve_leader{{{OPERATOR}}})"),),
            "1 on the replica that reconciles; 0 on standbys.",
        ),
        Panel(
            "Operator CPU and memory",
            "short",
            (
                Target(
                    "CPU cores {{instance}}",
                    f"rate(process_cpu_seconds_total{{{OPERATOR}}}[{window}])",
                ),
                Target(
                    "RSS GiB {{instance}}",
                    f"process_resident_memory_bytes{{{OPERATOR}}} / 2^30",
                ),
            ),
        ),
    )


def all_targets() -> Iterator[tuple[str, Target]]:
    """(panel title, target) for every expression in the dashboard."""
    for panel in (*model_panels(), *operator_panels()):
        for target in panel.targets:
            yield panel.title, target


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    for title, group in (
        ("ModelDeployment", model_panels()),
        ("Operator", operator_panels()),
    ):
        panels.append(_row(title, len(panels) + 1, y))
        y += 1
        for index, panel in enumerate(group):
            x = 12 * (index % 2)
            panels.append(_timeseries(panel, len(panels) + 1, x, y))
            y += 8 if x else 0
        y += 8 if len(group) % 2 else 0
    return {
        "uid": UID,
        "title": "kubeserve: ModelDeployments",
        "tags": ["kubeserve"],
        "editable": True,
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": _variables()},
        "panels": panels,
    }


def dashboard_json() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _row(title: str, panel_id: int, y: int) -> dict[str, Any]:
    return {
        "type": "row",
        "id": panel_id,
        "title": title,
        "collapsed": False,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
        "panels": [],
    }


def _timeseries(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "id": panel_id,
        "title": panel.title,
        "description": panel.description,
        "datasource": _DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + index),
                "datasource": _DATASOURCE,
                "expr": target.expr,
                "legendFormat": target.legend,
            }
            for index, target in enumerate(panel.targets)
        ],
    }


def _variables() -> list[dict[str, Any]]:
    def query(name: str, label: str, expr: str) -> dict[str, Any]:
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": _DATASOURCE,
            "query": {"query": expr, "refId": name},
            "refresh": 2,
            "sort": 1,
        }

    return [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
        },
        query("job", "Operator job", "label_values(kubeserve_leader, job)"),
        query(
            "namespace",
            "Namespace",
            "label_values(kubeserve_modeldeployments_ready, namespace)",
        ),
        query(
            "modeldeployment",
            "ModelDeployment",
            'label_values(kubeserve_modeldeployments_ready{namespace="$namespace"}, name)',
        ),
    ]
