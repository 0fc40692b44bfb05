"""The chart's Grafana dashboard and prometheus-adapter rules: generated, current, opt-in.

Whether their PromQL parses and returns data is judged on a real Prometheus
(tests/cluster/test_prometheus.py); here, what the chart ships.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from chartlib import CHART, VALUES, of_kind

from kubeserve import chartfiles, dashboard
from kubeserve.resources.autoscaling import adapter_rules

Render = Any


@pytest.mark.parametrize("name", sorted(chartfiles.FILES))
def test_the_chart_files_are_current(name: str) -> None:
    shipped = (CHART / "files" / name).read_text()
    assert shipped == chartfiles.FILES[name](), f"run `make generate` ({name} is stale)"


def _configmaps(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["metadata"]["name"]: c for c in of_kind(objects, "ConfigMap")}


def test_both_are_off_by_default(render: Render) -> None:
    assert _configmaps(render()) == {}


def test_the_dashboard_configmap_is_found_by_grafanas_sidecar(render: Render) -> None:
    configmap = _configmaps(render(VALUES / "monitoring.yaml"))["kubeserve-dashboard"]
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "kubeserve"}
    shipped = json.loads(configmap["data"]["kubeserve-modeldeployments.json"])
    assert shipped == dashboard.dashboard()


def test_the_adapter_rules_configmap_holds_every_rule(render: Render) -> None:
    configmap = _configmaps(render(VALUES / "monitoring.yaml"))["kubeserve-adapter-rules"]
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert yaml.safe_load(configmap["data"]["config.yaml"]) == {"rules": adapter_rules()}


def test_the_dashboard_covers_every_runtime_signal() -> None:
    exprs = [target.expr for _, target in dashboard.all_targets()]
    for series in (
        "kubeserve_inference_requests_total",
        "ts_inference_requests_total",
        ":tensorflow:serving:request_count",
        "kubeserve_inference_queue_duration_seconds_sum",
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "kubeserve_cold_start_seconds_count",
        "kubeserve_modeldeployment_replicas",
        "kubeserve_reconciles_total",
        "kubeserve_leader",
    ):
        assert any(series in expr for expr in exprs), series
    board = dashboard.dashboard()
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    names = {v["name"] for v in board["templating"]["list"]}
    for expr in exprs:
        for variable in ("$namespace", "$modeldeployment", "$job"):
            if variable in expr:
                assert variable[1:] in names
