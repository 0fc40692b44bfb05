"""What each autoscaling metric measures, as Prometheus queries for KEDA and prometheus-adapter.

One ``PromSeries`` per (runtime, metric) names the signal, written once as a template:

- ``{selector}``: label matchers picking this ModelDeployment's pods;
- ``{by}``: empty for one number over all pods (KEDA), `` by (<<.GroupBy>>) `` for one
  number per pod (prometheus-adapter, which serves the HPA's Pods metrics).

So the KEDA trigger query and the adapter rule come from the same text and cannot drift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ...api import InvalidSpec, Metric, MetricType, ModelDeployment, Runtime
from ...runtimes import RUNTIMES, runtime_for
from ...runtimes.base import PromSeries
from ...yamlio import dump
from ..names import child_name

RESOURCE_METRICS = {MetricType.CPU: "cpu", MetricType.MEMORY: "memory"}

# dcgm-exporter's per-GPU gauges, labelled with the pod the GPU is assigned to.
# DCGM_FI_DEV_GPU_UTIL is not reported for MIG slices; the profiling metric
# DCGM_FI_PROF_GR_ENGINE_ACTIVE (a 0..1 ratio) is, so MIG uses that, as a percentage.
GPU_UTILIZATION = PromSeries(
    "kubeserve_gpu_utilization",
    "avg{by}(avg_over_time(DCGM_FI_DEV_GPU_UTIL{{{selector}}}[2m]))",
)
MIG_UTILIZATION = PromSeries(
    "kubeserve_mig_gr_engine_active",
    "100 * avg{by}(avg_over_time(DCGM_FI_PROF_GR_ENGINE_ACTIVE{{{selector}}}[2m]))",
)

# How a total over all pods turns into replicas (KEDA metricType, i.e. the HPA target type
# of the External metric KEDA serves). Additive signals use AverageValue: replicas =
# total / target. Averages (latency, utilization) use Value: replicas = current * value /
# target, the HPA's proportional rule.
KEDA_METRIC_TYPES = {
    MetricType.REQUESTS_PER_SECOND: "AverageValue",
    MetricType.CONCURRENCY: "AverageValue",
    MetricType.QUEUE_LATENCY: "Value",
    MetricType.GPU_UTILIZATION: "Value",
}

ADAPTER_BY = " by (<<.GroupBy>>) "
ADAPTER_SELECTOR = "<<.LabelMatchers>>"
# The labels Prometheus attaches to every series scraped from a pod (PodMonitor and
# ServiceMonitor targets get them by default).
NAMESPACE_LABEL = "namespace"
POD_LABEL = "pod"

# Pod names: generateName keeps the first 58 characters of "<replicaset>-" and adds 5
# random characters; a ReplicaSet is "<deployment>-<pod-template-hash>" (up to 10 chars).
_GENERATED_BASE = 58
_HASH_MAX = 10
_RANDOM = "[a-z0-9]{5}"


@dataclass(frozen=True)
class Signal:
    """One metric of one ModelDeployment, resolved."""

    metric: Metric
    series: PromSeries | None  # None for cpu and memory, and for a user's own query

    @property
    def trigger_name(self) -> str:
        """requestsPerSecond -> requests-per-second (KEDA trigger names)."""
        return re.sub(r"(?<!^)([A-Z])", r"-\1", self.metric.type.value).lower()


def signals(md: ModelDeployment) -> list[Signal]:
    """Every metric of spec.autoscaling with its series; InvalidSpec for what cannot work."""
    scaling = md.spec.autoscaling
    if scaling is None:
        return []
    resolved = []
    for index, metric in enumerate(scaling.metrics):
        field = f"spec.autoscaling.metrics.{index}"
        if metric.type in RESOURCE_METRICS:
            _check_requests(md, metric, field)
            resolved.append(Signal(metric, None))
        elif metric.query:
            resolved.append(Signal(metric, None))
        else:
            resolved.append(Signal(metric, series_for(md, metric.type, field)))
    return resolved


def series_for(md: ModelDeployment, metric: MetricType, field: str = "") -> PromSeries:
    if metric == MetricType.GPU_UTILIZATION:
        gpu = md.spec.gpu
        if gpu is None:
            raise InvalidSpec(field, "gpuUtilization needs spec.gpu")
        if gpu.mig_profile:
            return MIG_UTILIZATION
        if not gpu.resource_name.startswith("nvidia.com/"):
            raise InvalidSpec(
                field,
                "gpuUtilization reads NVIDIA DCGM metrics; for "
                f"{gpu.resource_name} give a query (engine keda) or scale on another metric",
            )
        return GPU_UTILIZATION
    series = runtime_for(md.spec.runtime).series(metric)
    if series is None:
        raise InvalidSpec(field, f"runtime {md.spec.runtime.value} has no {metric.value} metric")
    return series


def _check_requests(md: ModelDeployment, metric: Metric, field: str) -> None:
    # Utilization is usage / requests; the HPA and KEDA refuse to compute it without one.
    # Mirrors deployment._resources: no spec.resources means the defaults (cpu and memory).
    user = md.spec.resources
    if user is None:
        return
    requested = user.requests or user.limits or {}
    name = RESOURCE_METRICS[metric.type]
    if name not in requested:
        raise InvalidSpec(
            field,
            f"{name} utilization is measured against spec.resources.requests.{name}; set it",
        )


def pod_selector(md: ModelDeployment) -> str:
    """PromQL label matchers for this ModelDeployment's pods (namespace and pod name)."""
    return (
        f'{NAMESPACE_LABEL}="{md.namespace}",{POD_LABEL}=~"{pod_name_regex(child_name(md.name))}"'
    )


def pod_name_regex(deployment: str) -> str:
    """A regex matching exactly the pod names of the Deployment's ReplicaSets.

    ``web`` must not match ``web-canary``'s pods: after the name come exactly a hash and a
    random suffix, each without dashes. Long names are cut by generateName; so is the regex.
    """
    room = _GENERATED_BASE - len(deployment) - 1  # characters left after "<deployment>-"
    if room < 0:
        regex = _literal(deployment[:_GENERATED_BASE]) + _RANDOM
    elif room == 0:
        regex = _literal(deployment) + "-" + _RANDOM
    elif room > _HASH_MAX:
        regex = _literal(deployment) + f"-[a-z0-9]{{1,{_HASH_MAX}}}-" + _RANDOM
    else:
        # The hash, and maybe its trailing dash, may have been cut.
        regex = _literal(deployment) + f"-[a-z0-9]{{1,{room}}}-?" + _RANDOM
    return regex


def _literal(name: str) -> str:
    # Object names hold [a-z0-9.-]; only the dot is special. In a PromQL string literal the
    # regex's backslash is itself escaped.
    return name.replace(".", "\\\\.")


def keda_query(md: ModelDeployment, signal: Signal) -> str:
    """One number for the whole ModelDeployment, as KEDA's Prometheus scaler wants."""
    if signal.metric.query:
        return signal.metric.query
    assert signal.series is not None
    return signal.series.query.format(by="", selector=pod_selector(md))


def adapter_query(series: PromSeries) -> str:
    """The per-pod query of a prometheus-adapter rule (its metricsQuery)."""
    return series.query.format(by=ADAPTER_BY, selector=ADAPTER_SELECTOR)


def discovery_series(series: PromSeries) -> str:
    """The first raw series a template reads: what the adapter discovers the metric by."""
    found = re.search(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{\{\{selector\}\}\}", series.query)
    if found is None:
        raise ValueError(f"no series selector in {series.query!r}")
    return found.group(1)


def all_series() -> list[tuple[str, MetricType, PromSeries]]:
    """(source, metric, series) for every runtime's native metrics and the GPU metrics."""
    found: list[tuple[str, MetricType, PromSeries]] = []
    for runtime in Runtime:
        for metric in MetricType:
            if metric in RESOURCE_METRICS or metric == MetricType.GPU_UTILIZATION:
                continue
            series = RUNTIMES[runtime].series(metric)
            if series is not None:
                found.append((runtime.value, metric, series))
    found.append(("dcgm-exporter", MetricType.GPU_UTILIZATION, GPU_UTILIZATION))
    found.append(("dcgm-exporter (MIG)", MetricType.GPU_UTILIZATION, MIG_UTILIZATION))
    return found


def adapter_rules() -> list[dict[str, Any]]:
    """prometheus-adapter rules serving every metric the HPA engine may reference."""
    rules = []
    for _source, _metric, series in all_series():
        raw = discovery_series(series)
        rules.append(
            {
                "seriesQuery": f'{{__name__="{raw}",{NAMESPACE_LABEL}!="",{POD_LABEL}!=""}}',
                "resources": {
                    "overrides": {
                        NAMESPACE_LABEL: {"resource": "namespace"},
                        POD_LABEL: {"resource": "pod"},
                    }
                },
                "name": {"matches": f"^{re.escape(raw)}$", "as": series.metric_name},
                "metricsQuery": adapter_query(series),
            }
        )
    return rules


def adapter_config_yaml() -> str:
    """The rules as prometheus-adapter's Helm chart takes them (values: rules.custom)."""
    return dump({"rules": {"custom": adapter_rules()}})
