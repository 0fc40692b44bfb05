"""The operator's own Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("kubeserve_reconciles_total", "Reconciles run, by outcome.", ["outcome"])
RECONCILE_ERRORS = Counter(
    "kubeserve_reconcile_errors_total", "Reconcile problems, by reason.", ["reason"]
)
RECONCILE_SECONDS = Histogram(
    "kubeserve_reconcile_duration_seconds",
    "Time to reconcile one ModelDeployment.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
READY = Gauge(
    "kubeserve_modeldeployments_ready",
    "ModelDeployments by Ready condition status.",
    ["namespace", "name"],
)
