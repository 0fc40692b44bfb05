"""spec.autoscaling: each metric type on each engine, the queries each runtime names, the set of
children per engine (what reconcile prunes), the PDB, the autoscaler's status, and the
contradictions both validation layers reject."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from cel_helper import cel_errors, schema_errors
from keda_schema import child_errors, scaled_object_errors

from kubeserve.api import InvalidSpec, MetricType, ModelDeployment, Runtime
from kubeserve.config import OperatorConfig
from kubeserve.dataplane.onnx_server.metrics import ServerMetrics
from kubeserve.render import render
from kubeserve.resources.autoscaling import (
    KEDA_NOT_INSTALLED,
    adapter_config_yaml,
    adapter_rules,
    autoscaler,
    autoscaler_status,
    expected_autoscaler,
    keda_hpa_name,
)
from kubeserve.resources.autoscaling.signals import (
    GPU_UTILIZATION,
    MIG_UTILIZATION,
    adapter_query,
    all_series,
    pod_name_regex,
)
from kubeserve.resources.kinds import CHILD_KINDS
from kubeserve.resources.pdb import pod_disruption_budget
from kubeserve.runtimes import runtime_for

ROOT = Path(__file__).resolve().parents[2]
CFG = OperatorConfig(prometheus_url="http://prometheus.monitoring.svc:9090")
SELECTOR = 'namespace="ml",pod=~"resnet-[a-z0-9]{1,10}-[a-z0-9]{5}"'
NATIVE = (MetricType.REQUESTS_PER_SECOND, MetricType.QUEUE_LATENCY, MetricType.CONCURRENCY)


def md_obj(runtime: str = "onnxruntime", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubeserve.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "resnet", "namespace": "ml", "uid": "0b7e-uid"},
        "spec": {"runtime": runtime, "model": {"uri": "s3://models/m"}, **spec},
    }


def md(runtime: str = "onnxruntime", **spec: Any) -> ModelDeployment:
    return ModelDeployment.parse(md_obj(runtime, **spec))


def auto(model: ModelDeployment) -> dict[str, Any]:
    """The rendered autoscaler, which these tests expect to exist."""
    obj = autoscaler(model, CFG)
    assert obj is not None
    return obj


def scaling(engine: str, *metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"engine": engine, "minReplicas": 1, "maxReplicas": 5, "metrics": list(metrics), **extra}


# ---------------------------------------------------------------- the queries


# Golden KEDA queries for a ModelDeployment "resnet" in namespace "ml". Each runtime's own
# metric names and units: TF Serving's latency histogram is in microseconds, TorchServe's
# latency counters are microsecond sums, our ONNX server's histograms are in seconds.
KEDA_QUERIES = {
    (Runtime.TFSERVING, MetricType.REQUESTS_PER_SECOND): (
        f"sum(rate(:tensorflow:serving:request_count{{{SELECTOR}}}[2m]))"
    ),
    (Runtime.TFSERVING, MetricType.QUEUE_LATENCY): (
        f"1e-3 * sum(rate(:tensorflow:serving:request_latency_sum{{{SELECTOR}}}[2m]))"
        " / clamp_min(sum(rate("
        f":tensorflow:serving:request_latency_count{{{SELECTOR}}}[2m])), 1e-9)"
    ),
    (Runtime.TFSERVING, MetricType.CONCURRENCY): (
        f"1e-6 * sum(rate(:tensorflow:serving:request_latency_sum{{{SELECTOR}}}[2m]))"
    ),
    (Runtime.TORCHSERVE, MetricType.REQUESTS_PER_SECOND): (
        f"sum(rate(ts_inference_requests_total{{{SELECTOR}}}[2m]))"
    ),
    (Runtime.TORCHSERVE, MetricType.QUEUE_LATENCY): (
        f"1e-3 * sum(rate(ts_queue_latency_microseconds{{{SELECTOR}}}[2m]))"
        f" / clamp_min(sum(rate(ts_inference_requests_total{{{SELECTOR}}}[2m])), 1e-9)"
    ),
    (Runtime.TORCHSERVE, MetricType.CONCURRENCY): (
        f"1e-6 * sum(rate(ts_inference_latency_microseconds{{{SELECTOR}}}[2m]))"
    ),
    (Runtime.ONNXRUNTIME, MetricType.REQUESTS_PER_SECOND): (
        f"sum(rate(kubeserve_inference_requests_total{{{SELECTOR}}}[2m]))"
    ),
    (Runtime.ONNXRUNTIME, MetricType.QUEUE_LATENCY): (
        f"1000 * sum(rate(kubeserve_inference_queue_duration_seconds_sum{{{SELECTOR}}}[2m]))"
        " / clamp_min(sum(rate("
        f"kubeserve_inference_queue_duration_seconds_count{{{SELECTOR}}}[2m])), 1e-9)"
    ),
    (Runtime.ONNXRUNTIME, MetricType.CONCURRENCY): (
        f"sum(rate(kubeserve_inference_request_duration_seconds_sum{{{SELECTOR}}}[2m]))"
    ),
}

# What each server really exports (TF Serving: /monitoring/prometheus/metrics with
# prometheus_config enabled; TorchServe: metrics_mode prometheus, frontend metrics).
EXPORTED = {
    Runtime.TFSERVING: {
        ":tensorflow:serving:request_count",
        ":tensorflow:serving:request_latency_bucket",
        ":tensorflow:serving:request_latency_sum",
        ":tensorflow:serving:request_latency_count",
    },
    Runtime.TORCHSERVE: {
        "ts_inference_requests_total",
        "ts_inference_latency_microseconds",
        "ts_queue_latency_microseconds",
    },
}


def onnx_server_series() -> set[str]:
    metrics = ServerMetrics("m")
    metrics.observe_request(200, 0.01)
    metrics.observe_batch(1, [0.001])
    return {s.name for family in metrics.registry.collect() for s in family.samples}


def series_in(query: str) -> set[str]:
    return set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", query))


@pytest.mark.parametrize(("runtime", "metric"), sorted(KEDA_QUERIES))
def test_keda_query_per_runtime(runtime: Runtime, metric: MetricType) -> None:
    model = md(runtime.value, autoscaling=scaling("keda", {"type": metric.value, "target": 5}))
    trigger = auto(model)["spec"]["triggers"][0]
    assert trigger["metadata"]["query"] == KEDA_QUERIES[(runtime, metric)]


@pytest.mark.parametrize(("runtime", "metric"), sorted(KEDA_QUERIES))
def test_queries_read_series_the_server_exports(runtime: Runtime, metric: MetricType) -> None:
    exported = onnx_server_series() if runtime == Runtime.ONNXRUNTIME else EXPORTED[runtime]
    used = series_in(KEDA_QUERIES[(runtime, metric)])
    assert used and used <= exported, used - exported


@pytest.mark.parametrize(
    ("source", "metric", "series"), all_series(), ids=lambda v: str(getattr(v, "metric_name", v))
)
def test_every_template_is_well_formed(source: str, metric: MetricType, series: Any) -> None:
    for query in (series.query.format(by="", selector=SELECTOR), adapter_query(series)):
        assert query.count("(") == query.count(")") and query.count("{") == query.count("}"), query
        assert "{by}" not in query and "{selector}" not in query
    per_pod = adapter_query(series)
    # Every aggregation in the adapter's query keeps the pod, so the adapter can map it.
    aggregations = re.findall(r"\b(?:sum|avg)\b\s*(?:by\b|\()", per_pod)
    assert aggregations and per_pod.count("<<.GroupBy>>") == len(aggregations)
    assert per_pod.count("<<.LabelMatchers>>") == len(
        re.findall(r"\{<<\.LabelMatchers>>\}", per_pod)
    )
    assert series.metric_name.startswith("kubeserve_")


def test_metric_names_are_unique_across_runtimes() -> None:
    names = [series.metric_name for _, _, series in all_series()]
    assert len(names) == len(set(names))


def test_every_runtime_names_every_native_metric() -> None:
    for runtime in Runtime:
        for metric in NATIVE:
            assert runtime_for(runtime).series(metric) is not None, (runtime, metric)
        assert runtime_for(runtime).series(MetricType.CPU) is None


# ---------------------------------------------------------------- metric x engine

GPU = {"count": 1}
METRICS: dict[str, dict[str, Any]] = {
    "cpu": {"type": "cpu", "target": 70},
    "memory": {"type": "memory", "target": 85.5},
    "requestsPerSecond": {"type": "requestsPerSecond", "target": 50},
    "queueLatency": {"type": "queueLatency", "target": 12.5},
    "concurrency": {"type": "concurrency", "target": 4},
    "gpuUtilization": {"type": "gpuUtilization", "target": 60},
}


def expected_hpa_metric(runtime: Runtime, name: str) -> dict[str, Any]:
    if name in ("cpu", "memory"):
        target = {"cpu": 70, "memory": 86}[name]
        return {
            "type": "ContainerResource",
            "containerResource": {
                "name": name,
                "container": "server",
                "target": {"type": "Utilization", "averageUtilization": target},
            },
        }
    series = (
        GPU_UTILIZATION
        if name == "gpuUtilization"
        else runtime_for(runtime).series(MetricType(name))
    )
    assert series is not None
    value = {
        "requestsPerSecond": "50",
        "queueLatency": "12.5",
        "concurrency": "4",
        "gpuUtilization": "60",
    }[name]
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": series.metric_name},
            "target": {"type": "AverageValue", "averageValue": value},
        },
    }


def expected_keda_trigger(runtime: Runtime, name: str) -> dict[str, Any]:
    if name in ("cpu", "memory"):
        value = {"cpu": "70", "memory": "86"}[name]
        return {
            "type": name,
            "name": name,
            "metricType": "Utilization",
            "metadata": {"value": value, "containerName": "server"},
        }
    trigger_name, metric_type, threshold = {
        "requestsPerSecond": ("requests-per-second", "AverageValue", "50"),
        "queueLatency": ("queue-latency", "Value", "12.5"),
        "concurrency": ("concurrency", "AverageValue", "4"),
        "gpuUtilization": ("gpu-utilization", "Value", "60"),
    }[name]
    if name == "gpuUtilization":
        query = f"avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{{{SELECTOR}}}[2m]))"
    else:
        query = KEDA_QUERIES[(runtime, MetricType(name))]
    return {
        "type": "prometheus",
        "name": trigger_name,
        "metricType": metric_type,
        "metadata": {"serverAddress": CFG.prometheus_url, "query": query, "threshold": threshold},
    }


@pytest.mark.parametrize("runtime", list(Runtime))
@pytest.mark.parametrize("metric", sorted(METRICS))
@pytest.mark.parametrize("engine", ["hpa", "keda"])
def test_each_metric_on_each_engine(runtime: Runtime, metric: str, engine: str) -> None:
    model = md(runtime.value, gpu=GPU, autoscaling=scaling(engine, METRICS[metric]))
    obj = autoscaler(model, CFG)
    assert obj is not None
    if engine == "hpa":
        assert (obj["apiVersion"], obj["kind"]) == ("autoscaling/v2", "HorizontalPodAutoscaler")
        assert obj["spec"]["metrics"] == [expected_hpa_metric(runtime, metric)]
        assert (obj["spec"]["minReplicas"], obj["spec"]["maxReplicas"]) == (1, 5)
    else:
        assert (obj["apiVersion"], obj["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
        assert obj["spec"]["triggers"] == [expected_keda_trigger(runtime, metric)]
        assert (obj["spec"]["minReplicaCount"], obj["spec"]["maxReplicaCount"]) == (1, 5)
    assert obj["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "resnet",
    }
    assert obj["metadata"]["ownerReferences"][0]["uid"] == "0b7e-uid"
    for child in render(model, CFG):
        assert child_errors(child) == [], child["kind"]


@pytest.mark.parametrize("engine", ["hpa", "keda"])
def test_all_metrics_together(engine: str) -> None:
    model = md(gpu=GPU, autoscaling=scaling(engine, *METRICS.values()))
    obj = autoscaler(model, CFG)
    assert obj is not None
    entries = obj["spec"]["metrics" if engine == "hpa" else "triggers"]
    assert len(entries) == len(METRICS)
    assert child_errors(obj) == []


def test_mig_gpu_utilization_reads_the_profiling_metric() -> None:
    model = md(
        gpu={"migProfile": "1g.10gb"}, autoscaling=scaling("keda", METRICS["gpuUtilization"])
    )
    trigger = auto(model)["spec"]["triggers"][0]
    assert (
        trigger["metadata"]["query"]
        == f"100 * avg(avg_over_time(DCGM_FI_PROF_GR_ENGINE_ACTIVE{{{SELECTOR}}}[2m]))"
    )
    hpa = auto(
        md(gpu={"migProfile": "1g.10gb"}, autoscaling=scaling("hpa", METRICS["gpuUtilization"]))
    )
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == MIG_UTILIZATION.metric_name


def test_a_query_replaces_the_runtime_series() -> None:
    query = 'sum(rate(nginx_ingress_controller_requests{namespace="ml",service="resnet"}[2m]))'
    model = md(
        autoscaling=scaling("keda", {"type": "requestsPerSecond", "target": 20, "query": query})
    )
    trigger = auto(model)["spec"]["triggers"][0]
    assert trigger["metadata"]["query"] == query
    assert trigger["metricType"] == "AverageValue"


def test_behavior_on_each_engine() -> None:
    behavior = {"behavior": {"scaleDownStabilizationSeconds": 600}}
    hpa = auto(md(autoscaling=scaling("hpa", METRICS["cpu"], **behavior)))
    assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 600}}
    keda = auto(md(autoscaling=scaling("keda", METRICS["cpu"], **behavior)))
    assert keda["spec"]["advanced"] == {
        "horizontalPodAutoscalerConfig": {
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 600}}
        }
    }
    assert "cooldownPeriod" not in keda["spec"]
    # Scaling to zero: the last step is KEDA's own cooldown.
    zero = scaling(
        "keda", {"type": "requestsPerSecond", "target": 1, "query": "sum(x)"}, **behavior
    )
    zero["minReplicas"] = 0
    scaled = auto(md(autoscaling=zero))
    assert scaled["spec"]["cooldownPeriod"] == 600
    assert scaled_object_errors(scaled) == []
    # Without behavior: Kubernetes' and KEDA's defaults, nothing written.
    assert "behavior" not in auto(md(autoscaling=scaling("hpa", METRICS["cpu"])))["spec"]


def test_default_metric_is_cpu_at_80() -> None:
    hpa = auto(md(autoscaling={"maxReplicas": 3}))
    assert hpa["spec"]["metrics"][0]["containerResource"]["target"]["averageUtilization"] == 80


# ---------------------------------------------------------------- invalid at render time

RENDER_ERRORS: dict[str, tuple[dict[str, Any], str]] = {
    "gpu-utilization-without-gpu": (
        {"autoscaling": scaling("hpa", METRICS["gpuUtilization"])},
        "spec.autoscaling.metrics.0: gpuUtilization needs spec.gpu",
    ),
    "gpu-utilization-on-amd": (
        {
            "gpu": {"resourceName": "amd.com/gpu"},
            "autoscaling": scaling("keda", METRICS["gpuUtilization"]),
        },
        "spec.autoscaling.metrics.0: gpuUtilization reads NVIDIA DCGM metrics",
    ),
    "cpu-without-cpu-request": (
        {
            "resources": {"requests": {"memory": "1Gi"}},
            "autoscaling": scaling("hpa", METRICS["memory"], METRICS["cpu"]),
        },
        "spec.autoscaling.metrics.1: cpu utilization is measured against "
        "spec.resources.requests.cpu",
    ),
    "memory-without-memory-request": (
        {"resources": {"limits": {"cpu": "1"}}, "autoscaling": scaling("keda", METRICS["memory"])},
        "spec.autoscaling.metrics.0: memory utilization",
    ),
}


@pytest.mark.parametrize("case", sorted(RENDER_ERRORS))
def test_what_only_the_operator_can_check_is_an_invalid_spec(case: str) -> None:
    spec, message = RENDER_ERRORS[case]
    with pytest.raises(InvalidSpec) as caught:
        render(md(**spec), CFG)
    assert str(caught.value).startswith(message), str(caught.value)


def test_amd_gpu_utilization_with_own_query_is_fine() -> None:
    metric = {**METRICS["gpuUtilization"], "query": "avg(amd_gpu_utilization)"}
    model = md(gpu={"resourceName": "amd.com/gpu"}, autoscaling=scaling("keda", metric))
    assert auto(model)["spec"]["triggers"][0]["metadata"]["query"] == "avg(amd_gpu_utilization)"


def test_requests_from_limits_count_as_requests() -> None:
    model = md(
        resources={"limits": {"cpu": "2", "memory": "4Gi"}},
        autoscaling=scaling("hpa", METRICS["cpu"]),
    )
    assert autoscaler(model, CFG) is not None


# ---------------------------------------------------------------- children per engine

ZERO: dict[str, Any] = {
    "engine": "keda",
    "minReplicas": 0,
    "maxReplicas": 3,
    "metrics": [{"type": "requestsPerSecond", "target": 5, "query": "sum(rate(x[2m]))"}],
}
SPECS: dict[str, dict[str, Any]] = {
    "off": {},
    "off-two-replicas": {"replicas": 2},
    "hpa": {"autoscaling": scaling("hpa", METRICS["cpu"])},
    "hpa-floor-two": {"autoscaling": {**scaling("hpa", METRICS["cpu"]), "minReplicas": 2}},
    "keda": {"autoscaling": scaling("keda", METRICS["requestsPerSecond"])},
    "keda-zero": {"autoscaling": ZERO},
    "keda-http": {
        "autoscaling": {**scaling("keda-http", METRICS["requestsPerSecond"]), "minReplicas": 0}
    },
}
KINDS = {
    "off": {"Deployment", "Service"},
    "off-two-replicas": {"Deployment", "Service", "PodDisruptionBudget"},
    "hpa": {"Deployment", "Service", "HorizontalPodAutoscaler"},
    "hpa-floor-two": {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"},
    "keda": {"Deployment", "Service", "ScaledObject"},
    "keda-zero": {"Deployment", "Service", "ScaledObject"},
    "keda-http": {"Deployment", "Service", "HTTPScaledObject"},
}
AUTOSCALER_KINDS = {"HorizontalPodAutoscaler", "ScaledObject", "HTTPScaledObject"}


def kinds(spec: dict[str, Any]) -> set[str]:
    return {child["kind"] for child in render(md(**spec), CFG)}


@pytest.mark.parametrize("case", sorted(SPECS))
def test_rendered_kinds_per_engine(case: str) -> None:
    assert kinds(SPECS[case]) == KINDS[case]
    known = {(k.api_version, k.kind) for k in CHILD_KINDS}
    for child in render(md(**SPECS[case]), CFG):
        assert (child["apiVersion"], child["kind"]) in known, "reconcile can only prune CHILD_KINDS"
        assert child_errors(child) == [], child["kind"]


@pytest.mark.parametrize("before", sorted(SPECS))
@pytest.mark.parametrize("after", sorted(SPECS))
def test_switching_leaves_one_autoscaler_or_none(before: str, after: str) -> None:
    """What reconcile prunes on an edit: the kinds rendered before but not after."""
    pruned = kinds(SPECS[before]) - kinds(SPECS[after])
    remaining = kinds(SPECS[after])
    assert len(remaining & AUTOSCALER_KINDS) == (1 if "autoscaling" in SPECS[after] else 0)
    if "HorizontalPodAutoscaler" in kinds(SPECS[before]) and "keda" in after:
        assert "HorizontalPodAutoscaler" in pruned
    if "ScaledObject" in kinds(SPECS[before]) and after not in ("keda", "keda-zero"):
        assert "ScaledObject" in pruned
    if "HTTPScaledObject" in kinds(SPECS[before]) and after != "keda-http":
        assert "HTTPScaledObject" in pruned
    # Children keep their names across engines, so an edit never leaves a renamed twin.
    names = {child["metadata"]["name"] for child in render(md(**SPECS[after]), CFG)}
    assert names == {"resnet"}


def test_expected_autoscaler_names_the_object_to_read() -> None:
    assert expected_autoscaler(md()) is None
    ref = expected_autoscaler(md(**SPECS["keda"]))
    assert ref == ("keda.sh/v1alpha1", "ScaledObject", "resnet")
    assert expected_autoscaler(md(**SPECS["hpa"])) == (
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "resnet",
    )


# ---------------------------------------------------------------- PDB

PDB_CASES: dict[str, tuple[dict[str, Any], bool]] = {
    "one-replica": ({"replicas": 1}, False),
    "two-replicas": ({"replicas": 2}, True),
    "replicas-ignored-with-autoscaling": (
        {"replicas": 5, "autoscaling": scaling("hpa", METRICS["cpu"])},
        False,
    ),
    "min-two": ({"autoscaling": {**scaling("hpa", METRICS["cpu"]), "minReplicas": 2}}, True),
    "keda-zero": ({"autoscaling": ZERO}, False),
}


@pytest.mark.parametrize("case", sorted(PDB_CASES))
def test_pdb_keeps_one_pod_when_there_are_two(case: str) -> None:
    spec, expected = PDB_CASES[case]
    pdb = pod_disruption_budget(md(**spec))
    if not expected:
        assert pdb is None
        return
    assert pdb is not None
    assert pdb["spec"] == {
        "minAvailable": 1,
        "selector": {
            "matchLabels": {
                "app.kubernetes.io/name": "onnxruntime",
                "app.kubernetes.io/instance": "resnet",
                "app.kubernetes.io/managed-by": "kubeserve",
            }
        },
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }
    assert child_errors(pdb) == []


# ---------------------------------------------------------------- pod name regex


def generated_pod_names(deployment: str) -> list[str]:
    """Pod names as the ReplicaSet controller makes them (generateName keeps 58 chars)."""
    names = []
    for pod_hash in ("5d4f8b9c7", "7c9d5f6b4d", "68b"):
        base = f"{deployment}-{pod_hash}-"[:58]
        names.append(base + "x2k9q")
    return names


@pytest.mark.parametrize("length", [6, 20, 44, 46, 47, 48, 50, 56, 57, 58, 60, 63])
def test_pod_name_regex_matches_exactly_the_deployments_pods(length: int) -> None:
    name = ("model-" * 20)[: length - 1] + "z"
    regex = re.compile(pod_name_regex(name).replace("\\\\", "\\"))
    for pod in generated_pod_names(name):
        assert regex.fullmatch(pod), (pod, regex.pattern)
    if length <= 44:
        for sibling in (f"{name}-canary", f"{name}-v2"):
            for pod in generated_pod_names(sibling):
                assert not regex.fullmatch(pod), (pod, regex.pattern)


def test_pod_name_regex_escapes_dots_for_promql() -> None:
    assert pod_name_regex("bert.base") == "bert\\\\.base-[a-z0-9]{1,10}-[a-z0-9]{5}"


# ---------------------------------------------------------------- prometheus-adapter


def test_adapter_rules_cover_every_pods_metric_the_hpa_uses() -> None:
    served = {rule["name"]["as"] for rule in adapter_rules()}
    for runtime in Runtime:
        for metric in ("requestsPerSecond", "queueLatency", "concurrency", "gpuUtilization"):
            hpa = auto(md(runtime.value, gpu=GPU, autoscaling=scaling("hpa", METRICS[metric])))
            assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] in served
    for rule in adapter_rules():
        raw = re.search(r'__name__="([^"]+)"', rule["seriesQuery"])
        assert raw and raw.group(1) in rule["metricsQuery"]
        assert re.fullmatch(rule["name"]["matches"], raw.group(1))


def test_docs_show_the_adapter_rules_the_code_generates() -> None:
    docs = (ROOT / "docs" / "autoscaling.md").read_text()
    assert adapter_config_yaml() in docs, "paste adapter_config_yaml() into docs/autoscaling.md"


# ---------------------------------------------------------------- status


def hpa_status(
    *conditions: tuple[str, str, str, str], current: int = 2, desired: int = 3
) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "resnet"},
        "status": {
            "currentReplicas": current,
            "desiredReplicas": desired,
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conditions
            ],
        },
    }


def scaled_object_status(
    *conditions: tuple[str, str, str, str], minimum: int = 1
) -> dict[str, Any]:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "resnet"},
        "spec": {"minReplicaCount": minimum},
        "status": {
            "hpaName": "keda-hpa-resnet",
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conditions
            ],
        },
    }


ABLE = ("AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size")
ACTIVE = (
    "ScalingActive",
    "True",
    "ValidMetricFound",
    "the HPA was able to compute the replica count",
)
SO_READY = (
    "Ready",
    "True",
    "ScaledObjectReady",
    "ScaledObject is defined correctly and is ready for scaling",
)
SO_ACTIVE = ("Active", "True", "ScalerActive", "Scaling is performed because triggers are active")
SO_IDLE = (
    "Active",
    "False",
    "ScalerNotActive",
    "Scaling is not performed because triggers are not active",
)

STATUS_CASES: dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None, tuple[Any, ...]]] = {
    "not-created": (None, None, (None, None, "Unknown", "AutoscalerPending")),
    "hpa-new": (hpa_status(), None, (2, 3, "Unknown", "AutoscalerPending")),
    "hpa-ok": (hpa_status(ABLE, ACTIVE), None, (2, 3, "True", "AutoscalerActive")),
    "hpa-limited": (
        hpa_status(
            ABLE,
            ACTIVE,
            (
                "ScalingLimited",
                "True",
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            ),
        ),
        None,
        (2, 3, "True", "AutoscalerActive", "more than the maximum"),
    ),
    "hpa-no-custom-metrics": (
        hpa_status(
            ABLE,
            (
                "ScalingActive",
                "False",
                "FailedGetPodsMetric",
                "unable to get metric kubeserve_onnxruntime_requests_per_second",
            ),
        ),
        None,
        (2, 3, "False", "FailedGetPodsMetric", "prometheus-adapter"),
    ),
    "hpa-no-metrics-server": (
        hpa_status(
            ABLE,
            (
                "ScalingActive",
                "False",
                "FailedGetContainerResourceMetric",
                "unable to get metrics for resource cpu",
            ),
        ),
        None,
        (2, 3, "False", "FailedGetContainerResourceMetric", "metrics-server"),
    ),
    "hpa-cannot-scale": (
        hpa_status(
            ("AbleToScale", "False", "FailedGetScale", "deployments/scale not found"), ACTIVE
        ),
        None,
        (2, 3, "False", "FailedGetScale", "deployments/scale not found"),
    ),
    "keda-new": (scaled_object_status(), None, (None, None, "Unknown", "AutoscalerPending")),
    "keda-ready-active": (
        scaled_object_status(SO_READY, SO_ACTIVE),
        hpa_status(ABLE, ACTIVE, current=4, desired=5),
        (4, 5, "True", "AutoscalerActive", "scaling on its triggers"),
    ),
    "keda-ready-no-hpa-given": (
        scaled_object_status(SO_READY, SO_ACTIVE),
        None,
        (None, None, "True", "AutoscalerActive"),
    ),
    "keda-idle": (
        scaled_object_status(SO_READY, SO_IDLE),
        None,
        (None, None, "True", "AutoscalerActive", "minReplicaCount (1)"),
    ),
    "keda-idle-to-zero": (
        scaled_object_status(SO_READY, SO_IDLE, minimum=0),
        hpa_status(ABLE, ACTIVE, current=1, desired=1),
        (1, 0, "True", "AutoscalerActive", "scales to zero"),
    ),
    "keda-not-ready": (
        scaled_object_status(
            (
                "Ready",
                "False",
                "ScaledObjectCheckFailed",
                "Failed to ensure HPA is correctly created for ScaledObject",
            )
        ),
        None,
        (None, None, "False", "ScaledObjectCheckFailed", "Failed to ensure HPA"),
    ),
    "keda-paused": (
        scaled_object_status(
            SO_READY, ("Paused", "True", "ScaledObjectPaused", "ScaledObject is paused")
        ),
        None,
        (None, None, "False", "ScaledObjectPaused"),
    ),
    "keda-fallback": (
        scaled_object_status(
            SO_READY,
            SO_ACTIVE,
            ("Fallback", "True", "FallbackExists", "At least one trigger is falling back"),
        ),
        None,
        (None, None, "False", "FallbackActive", "falling back"),
    ),
}


@pytest.mark.parametrize("case", sorted(STATUS_CASES))
def test_autoscaler_status(case: str) -> None:
    obj, hpa, (current, desired, status, reason, *fragment) = STATUS_CASES[case]
    state = autoscaler_status(obj, hpa=hpa)
    assert (state.current, state.desired) == (current, desired)
    assert (state.condition.status, state.condition.reason) == (status, reason), (
        state.condition.message
    )
    assert state.condition.message
    for text in fragment:
        assert text in state.condition.message
    got_current, got_desired, condition = state  # a plain tuple too
    assert (got_current, got_desired, condition) == (current, desired, state.condition)


def test_keda_not_installed_condition() -> None:
    assert (KEDA_NOT_INSTALLED.status, KEDA_NOT_INSTALLED.reason) == ("False", "KEDANotInstalled")
    assert (
        "keda.sh/v1alpha1" in KEDA_NOT_INSTALLED.message
        and "engine hpa" in KEDA_NOT_INSTALLED.message
    )


def test_keda_hpa_name() -> None:
    assert keda_hpa_name(scaled_object_status()) == "keda-hpa-resnet"
    assert keda_hpa_name({"metadata": {"name": "x"}}) == "keda-hpa-x"
    named = {
        "metadata": {"name": "x"},
        "spec": {"advanced": {"horizontalPodAutoscalerConfig": {"name": "mine"}}},
    }
    assert keda_hpa_name(named) == "mine"


# ---------------------------------------------------------------- contradictions

VALID: dict[str, dict[str, Any]] = {
    "hpa-defaults": {"maxReplicas": 3},
    "hpa-custom": scaling("hpa", METRICS["requestsPerSecond"], METRICS["cpu"]),
    "keda": scaling("keda", *METRICS.values()),
    "keda-zero-with-query": ZERO,
    "keda-zero-query-plus-cpu": {**ZERO, "metrics": [*ZERO["metrics"], METRICS["cpu"]]},
    "equal-bounds": {"minReplicas": 3, "maxReplicas": 3},
    "behavior": {"maxReplicas": 3, "behavior": {"scaleDownStabilizationSeconds": 0}},
}

# name -> (spec.autoscaling, fragment of both layers' message)
INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "min-over-max": ({"minReplicas": 5, "maxReplicas": 2}, "minReplicas must be <= maxReplicas"),
    "zero-on-hpa": (
        {
            "minReplicas": 0,
            "maxReplicas": 2,
            "metrics": [{"type": "requestsPerSecond", "target": 1}],
        },
        "needs engine keda",
    ),
    "zero-with-only-cpu": (
        {
            "engine": "keda",
            "minReplicas": 0,
            "maxReplicas": 2,
            "metrics": [METRICS["cpu"], METRICS["memory"]],
        },
        "needs a metric with a query",
    ),
    "zero-with-pod-metrics-only": (
        {
            "engine": "keda",
            "minReplicas": 0,
            "maxReplicas": 2,
            "metrics": [METRICS["requestsPerSecond"]],
        },
        "needs a metric with a query",
    ),
    "zero-with-default-metrics": (
        {"engine": "keda", "minReplicas": 0, "maxReplicas": 2},
        "needs a metric with a query",
    ),
    "query-on-hpa": (
        {
            "maxReplicas": 2,
            "metrics": [{"type": "requestsPerSecond", "target": 1, "query": "sum(x)"}],
        },
        "query needs engine keda",
    ),
    "query-on-cpu": (
        {
            "engine": "keda",
            "maxReplicas": 2,
            "metrics": [{"type": "cpu", "target": 50, "query": "sum(x)"}],
        },
        "cpu and memory come from the kubelet",
    ),
    "duplicate-type": (
        {"maxReplicas": 2, "metrics": [METRICS["cpu"], {"type": "cpu", "target": 90}]},
        "each type at most once",
    ),
}

MALFORMED: dict[str, dict[str, Any]] = {
    "unknown-type": {"maxReplicas": 2, "metrics": [{"type": "gpuMemory", "target": 1}]},
    "zero-target": {"maxReplicas": 2, "metrics": [{"type": "cpu", "target": 0}]},
    "no-max": {"minReplicas": 1},
    "no-metrics": {"maxReplicas": 2, "metrics": []},
    "unknown-engine": {"maxReplicas": 2, "engine": "vpa"},
    "negative-min": {"minReplicas": -1, "maxReplicas": 2},
    "empty-query": {
        "engine": "keda",
        "maxReplicas": 2,
        "metrics": [{"type": "concurrency", "target": 1, "query": ""}],
    },
    "long-stabilization": {"maxReplicas": 2, "behavior": {"scaleDownStabilizationSeconds": 3601}},
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_autoscaling_passes_both_layers(name: str) -> None:
    value = VALID[name]
    assert schema_errors("spec.autoscaling", value) == []
    assert cel_errors("spec.autoscaling", value) == []
    md(gpu=GPU, autoscaling=value)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_contradictions_are_rejected_by_cel_and_pydantic_alike(name: str) -> None:
    value, fragment = INVALID[name]
    assert schema_errors("spec.autoscaling", value) == []
    errors = cel_errors("spec.autoscaling", value)
    assert errors and all(e.startswith("autoscaling.") for e in errors), errors
    assert any(fragment in e for e in errors), errors
    with pytest.raises(InvalidSpec) as caught:
        md(autoscaling=value)
    assert str(caught.value).startswith("spec.autoscaling") and fragment in str(caught.value)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_autoscaling_is_rejected_by_schema_and_pydantic(name: str) -> None:
    value = MALFORMED[name]
    assert schema_errors("spec.autoscaling", value)
    with pytest.raises(InvalidSpec, match=r"^spec\.autoscaling"):
        md(autoscaling=value)


def test_docs_explain_every_autoscaling_field_and_metric_type() -> None:
    from kubeserve.api import Autoscaling, Behavior, HttpScaling, Metric

    docs = (ROOT / "docs" / "autoscaling.md").read_text()
    for model, prefix in (
        (Autoscaling, ""),
        (Metric, "metrics[]."),
        (Behavior, "behavior."),
        (HttpScaling, "http."),
    ):
        for name, field in model.model_fields.items():
            assert f"`{prefix}{field.alias or name}`" in docs, f"{prefix}{field.alias or name}"
    for metric in MetricType:
        assert f"| `{metric.value}` |" in docs, metric


@pytest.mark.parametrize(
    "example",
    ["gpu-tfserving", "mig-onnxruntime", "keda-scale-to-zero", "keda-http-scale-to-zero"],
)
def test_examples_render_valid_children(example: str) -> None:
    import yaml

    doc = yaml.safe_load((ROOT / "examples" / f"{example}.yaml").read_text())
    assert cel_errors("spec", doc["spec"]) == []
    model = ModelDeployment.parse(doc)
    children = render(model, CFG)
    for child in children:
        assert child_errors(child) == [], child["kind"]
    kinds_rendered = {child["kind"] for child in children}
    expected = {
        "gpu-tfserving": {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"},
        "mig-onnxruntime": {
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
        },
        "keda-scale-to-zero": {"Deployment", "Service", "ScaledObject"},
        "keda-http-scale-to-zero": {"Deployment", "Service", "HTTPScaledObject"},
    }[example]
    assert kinds_rendered == expected
