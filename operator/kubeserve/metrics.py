"""The operator's own Prometheus metrics."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

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
API_REQUESTS = Counter(
    "kubeserve_api_requests_total",
    "Requests the operator's own client sent to the API server (kopf's watches aside), by "
    "verb and HTTP status; 0: no response.",
    ["verb", "code"],
)
LEADER = Gauge(
    "kubeserve_leader",
    "1 while this replica holds the leader-election Lease and reconciles; 0 on a standby.",
)
READY = Gauge(
    "kubeserve_modeldeployments_ready",
    "ModelDeployments by Ready condition status.",
    ["namespace", "name"],
)
CONDITION = Gauge(
    "kubeserve_modeldeployment_condition",
    "1 for the current status of each condition of each ModelDeployment, 0 for the others "
    "(kube-state-metrics style: sum by (type, status) counts ModelDeployments).",
    ["namespace", "name", "type", "status"],
)
REPLICAS = Gauge(
    "kubeserve_modeldeployment_replicas",
    "Pods of each ModelDeployment's current Deployment (state current) and those ready.",
    ["namespace", "name", "state"],
)
COLD_START = Histogram(
    "kubeserve_cold_start_seconds",
    "Seconds from a model-server pod's start to Ready, by stage: download (the storage "
    "initializer), startup (server start to Ready: load and warm-up), total (pod created to "
    "Ready). Observed by the leader, once per pod start (docs/coldstart.md).",
    ["namespace", "name", "stage"],
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
COLD_START_STAGES = ("download", "startup", "total")
REPLICA_STATES = {"current": "replicas", "ready": "readyReplicas"}
STATUSES = ("True", "False", "Unknown")
_condition_types: dict[tuple[str, str], set[str]] = {}
# (type, status) of each condition last recorded, per ModelDeployment.
_recorded: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}


def set_conditions(namespace: str, name: str, conditions: Iterable[Mapping[str, Any]]) -> None:
    """Record a ModelDeployment's conditions (READY and CONDITION)."""
    statuses = tuple((c["type"], c["status"]) for c in conditions)
    if _recorded.get((namespace, name)) == statuses:
        return  # each status write calls this; the labels' lookups are not free
    _recorded[(namespace, name)] = statuses
    types = _condition_types.setdefault((namespace, name), set())
    for condition in conditions:
        types.add(condition["type"])
        for status in STATUSES:
            value = 1.0 if condition["status"] == status else 0.0
            CONDITION.labels(namespace, name, condition["type"], status).set(value)
            if condition["type"] == "Ready" and status == "True":
                READY.labels(namespace, name).set(value)


def set_replicas(namespace: str, name: str, status: Mapping[str, Any]) -> None:
    for state, field in REPLICA_STATES.items():
        REPLICAS.labels(namespace, name, state).set(status.get(field) or 0)


def observe_cold_start(namespace: str, name: str, stages: Mapping[str, float]) -> None:
    for stage, seconds in stages.items():
        COLD_START.labels(namespace, name, stage).observe(seconds)


def forget(namespace: str, name: str) -> None:
    """A deleted ModelDeployment leaves no series behind."""
    _recorded.pop((namespace, name), None)
    for state in REPLICA_STATES:
        with contextlib.suppress(KeyError):
            REPLICAS.remove(namespace, name, state)
    for stage in COLD_START_STAGES:
        with contextlib.suppress(KeyError):
            COLD_START.remove(namespace, name, stage)
    with contextlib.suppress(KeyError):
        READY.remove(namespace, name)
    for kind in _condition_types.pop((namespace, name), set()):
        for status in STATUSES:
            with contextlib.suppress(KeyError):
                CONDITION.remove(namespace, name, kind, status)
