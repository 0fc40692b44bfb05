"""engine keda-http: a KEDA HTTP add-on HTTPScaledObject (http.keda.sh/v1alpha1).

The add-on's interceptor proxy receives the model's requests (routed to it by Host header
and path), counts them, and forwards them to the model's Service. At zero replicas it holds
each request until the first pod is ready (up to timeouts.conditionWait), so scale from zero
needs no query and no Prometheus: the signal is measured in front of the pods, not in them.

The add-on makes and owns the ScaledObject (and KEDA its HPA); we make neither. The
requestRate is per second (granularity 1s) over KEDA's default one-minute window, so a
requestsPerSecond target means the same as with the other engines.
"""

from __future__ import annotations

from typing import Any

from ...api import DEFAULT_COLD_START_TIMEOUT_SECONDS, MetricType, ModelDeployment
from ...config import OperatorConfig
from ...runtimes import runtime_for
from ..labels import metadata
from ..names import child_name

API_VERSION = "http.keda.sh/v1alpha1"
KIND = "HTTPScaledObject"
HTTP_PORT_NAME = "http"
# requestRate: requests per granularity, averaged over window.
REQUEST_RATE_WINDOW = "1m"
REQUEST_RATE_GRANULARITY = "1s"


def http_scaled_object(md: ModelDeployment, cfg: OperatorConfig) -> dict[str, Any]:
    scaling = md.spec.autoscaling
    assert scaling is not None
    name = child_name(md.name)
    http = scaling.http
    spec: dict[str, Any] = {
        "hosts": list(http.hosts) if http and http.hosts else default_hosts(md, cfg),
    }
    if http and http.path_prefixes:
        spec["pathPrefixes"] = list(http.path_prefixes)
    spec["scaleTargetRef"] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": name,
        "service": name,
        "port": service_http_port(md),
    }
    spec["replicas"] = {"min": scaling.min_replicas, "max": scaling.max_replicas}
    spec["scalingMetric"] = scaling_metric(md)
    behavior = scaling.behavior
    if behavior and behavior.scale_down_stabilization_seconds is not None:
        spec["scaledownPeriod"] = behavior.scale_down_stabilization_seconds
    wait = http.cold_start_timeout_seconds if http else DEFAULT_COLD_START_TIMEOUT_SECONDS
    spec["timeouts"] = {"conditionWait": f"{wait}s"}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata(md, name),
        "spec": spec,
    }


def default_hosts(md: ModelDeployment, cfg: OperatorConfig) -> list[str]:
    """The Service's namespaced in-cluster names.

    Not the bare Service name: hosts are unique across the cluster's HTTPScaledObjects, and
    two namespaces may each hold a model of the same name.
    """
    base = f"{child_name(md.name)}.{md.namespace}"
    return [f"{base}.svc.{cfg.cluster_domain}", f"{base}.svc", base]


def service_http_port(md: ModelDeployment) -> int:
    """The Service's port for the runtime's HTTP API (the interceptor speaks HTTP only)."""
    for port in runtime_for(md.spec.runtime).ports:
        if port.name == HTTP_PORT_NAME and port.service_port is not None:
            return port.service_port
    raise AssertionError(f"runtime {md.spec.runtime.value} exposes no http port")


def scaling_metric(md: ModelDeployment) -> dict[str, Any]:
    scaling = md.spec.autoscaling
    assert scaling is not None
    (metric,) = scaling.metrics  # exactly one (api.Autoscaling)
    target = int(metric.target)
    if metric.type == MetricType.CONCURRENCY:
        return {"concurrency": {"targetValue": target}}
    assert metric.type == MetricType.REQUESTS_PER_SECOND, metric.type
    return {
        "requestRate": {
            "targetValue": target,
            "window": REQUEST_RATE_WINDOW,
            "granularity": REQUEST_RATE_GRANULARITY,
        }
    }
