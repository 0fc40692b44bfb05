"""engine keda-http: the HTTPScaledObject we build, what both validation layers refuse, the
status that names the mode, and the pruning when the engine changes (through reconcile)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cel_helper import cel_errors, schema_errors
from keda_schema import child_errors, http_scaled_object_errors

from kubeserve.api import InvalidSpec, ModelDeployment
from kubeserve.config import OperatorConfig
from kubeserve.kube import ApiError
from kubeserve.reconcile import ChildCache, reconcile
from kubeserve.render import render
from kubeserve.resources.autoscaling import (
    KEDA_HTTP_NOT_INSTALLED,
    autoscaler,
    autoscaler_status,
    expected_autoscaler,
    http_add_on_hpa_name,
)

CFG = OperatorConfig(cluster_domain="cluster.local")
UID = "0b7e-uid"
HOSTS = ["resnet.ml.svc.cluster.local", "resnet.ml.svc", "resnet.ml"]
REF = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "name": "resnet",
    "service": "resnet",
    "port": 8080,
}
RPS = {"type": "requestsPerSecond", "target": 5}


def md_obj(runtime: str = "onnxruntime", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubeserve.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "resnet", "namespace": "ml", "uid": UID, "generation": 1},
        "spec": {"runtime": runtime, "model": {"uri": "s3://models/m"}, **spec},
    }


def http(*metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "engine": "keda-http",
        "minReplicas": 0,
        "maxReplicas": 4,
        "metrics": list(metrics or [RPS]),
        **extra,
    }


# ---------------------------------------------------------------- the builder

# name -> (runtime, spec.autoscaling, the expected HTTPScaledObject spec)
BUILDER_CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "defaults-request-rate": (
        "onnxruntime",
        http(),
        {
            "hosts": HOSTS,
            "scaleTargetRef": REF,
            "replicas": {"min": 0, "max": 4},
            "scalingMetric": {
                "requestRate": {"targetValue": 5, "window": "1m", "granularity": "1s"}
            },
            "timeouts": {"conditionWait": "300s"},
        },
    ),
    "concurrency": (
        "onnxruntime",
        http({"type": "concurrency", "target": 3.0}),
        {
            "hosts": HOSTS,
            "scaleTargetRef": REF,
            "replicas": {"min": 0, "max": 4},
            "scalingMetric": {"concurrency": {"targetValue": 3}},
            "timeouts": {"conditionWait": "300s"},
        },
    ),
    "everything-set": (
        "tfserving",
        http(
            RPS,
            minReplicas=1,
            behavior={"scaleDownStabilizationSeconds": 900},
            http={
                "hosts": ["resnet.models.example.com"],
                "pathPrefixes": ["/v1/models/resnet"],
                "coldStartTimeoutSeconds": 600,
            },
        ),
        {
            "hosts": ["resnet.models.example.com"],
            "pathPrefixes": ["/v1/models/resnet"],
            "scaleTargetRef": REF,
            "replicas": {"min": 1, "max": 4},
            "scalingMetric": {
                "requestRate": {"targetValue": 5, "window": "1m", "granularity": "1s"}
            },
            "scaledownPeriod": 900,
            "timeouts": {"conditionWait": "600s"},
        },
    ),
    "http-with-only-a-timeout": (
        "torchserve",
        http(RPS, http={"coldStartTimeoutSeconds": 45}),
        {
            "hosts": HOSTS,
            "scaleTargetRef": REF,
            "replicas": {"min": 0, "max": 4},
            "scalingMetric": {
                "requestRate": {"targetValue": 5, "window": "1m", "granularity": "1s"}
            },
            "timeouts": {"conditionWait": "45s"},
        },
    ),
}


@pytest.mark.parametrize("case", sorted(BUILDER_CASES))
def test_http_scaled_object(case: str) -> None:
    runtime, scaling, spec = BUILDER_CASES[case]
    obj = autoscaler(ModelDeployment.parse(md_obj(runtime, autoscaling=scaling)), CFG)
    assert obj is not None
    assert (obj["apiVersion"], obj["kind"]) == ("http.keda.sh/v1alpha1", "HTTPScaledObject")
    assert obj["metadata"]["name"] == "resnet"
    assert obj["metadata"]["ownerReferences"][0]["uid"] == UID
    assert obj["spec"] == spec
    assert http_scaled_object_errors(obj) == []


def test_default_hosts_follow_the_cluster_domain() -> None:
    model = ModelDeployment.parse(md_obj(autoscaling=http()))
    obj = autoscaler(model, OperatorConfig(cluster_domain="corp.internal"))
    assert obj is not None
    assert obj["spec"]["hosts"][0] == "resnet.ml.svc.corp.internal"


def test_the_schema_check_catches_what_the_crd_refuses() -> None:
    obj = autoscaler(ModelDeployment.parse(md_obj(autoscaling=http())), CFG)
    assert obj is not None
    both = {**obj, "spec": {**obj["spec"], "scaleTargetRef": {**REF, "portName": "http"}}}
    assert any("portName" in e for e in http_scaled_object_errors(both))
    typo = {**obj, "spec": {**obj["spec"], "scaledownperiod": 5}}
    assert http_scaled_object_errors(typo)


def test_render_makes_no_scaled_object_nor_hpa_and_leaves_replicas_to_keda() -> None:
    model = ModelDeployment.parse(md_obj(replicas=3, autoscaling=http()))
    children = render(model, CFG)
    # No ScaledObject (the add-on makes its own) and no HPA (KEDA makes that).
    assert {c["kind"] for c in children} == {"Deployment", "Service", "HTTPScaledObject"}
    deploy = next(c for c in children if c["kind"] == "Deployment")
    assert "replicas" not in deploy["spec"]  # spec.replicas: 3 is ignored: KEDA owns it
    for child in children:
        assert child_errors(child) == [], child["kind"]
    service = next(c for c in children if c["kind"] == "Service")
    assert REF["port"] in [p["port"] for p in service["spec"]["ports"]]


def test_expected_autoscaler_and_its_hpa() -> None:
    model = ModelDeployment.parse(md_obj(autoscaling=http()))
    assert expected_autoscaler(model) == ("http.keda.sh/v1alpha1", "HTTPScaledObject", "resnet")
    assert http_add_on_hpa_name({"metadata": {"name": "resnet"}}) == "keda-hpa-resnet"


# ---------------------------------------------------------------- validation

VALID: dict[str, dict[str, Any]] = {
    "zero-without-query": http(),
    "concurrency": http({"type": "concurrency", "target": 10}),
    "floor-one": http(RPS, minReplicas=1),
    "whole-float-target": http({"type": "requestsPerSecond", "target": 5.0}),
    "http-fields": http(
        RPS, http={"hosts": ["a.example.com"], "pathPrefixes": ["/"], "coldStartTimeoutSeconds": 1}
    ),
}

# name -> (spec.autoscaling, fragment of both layers' message)
INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "no-metrics": (
        {"engine": "keda-http", "minReplicas": 0, "maxReplicas": 2},
        "exactly one metric",
    ),
    "cpu": (http({"type": "cpu", "target": 50}), "exactly one metric"),
    "queue-latency": (http({"type": "queueLatency", "target": 50}), "exactly one metric"),
    "two-metrics": (http(RPS, {"type": "concurrency", "target": 2}), "exactly one metric"),
    "query": (
        http({"type": "requestsPerSecond", "target": 5, "query": "sum(x)"}),
        "not used with engine keda-http",
    ),
    "fractional-target": (http({"type": "concurrency", "target": 2.5}), "whole number"),
    "http-on-hpa": (
        {"maxReplicas": 2, "http": {"coldStartTimeoutSeconds": 60}},
        "applies only to engine keda-http",
    ),
    "http-on-keda": (
        {"engine": "keda", "maxReplicas": 2, "metrics": [RPS], "http": {}},
        "applies only to engine keda-http",
    ),
    "zero-on-hpa-names-keda-http": (
        {"minReplicas": 0, "maxReplicas": 2, "metrics": [RPS]},
        "needs engine keda or keda-http",
    ),
}

MALFORMED: dict[str, dict[str, Any]] = {
    "host-with-scheme": http(RPS, http={"hosts": ["http://a.example.com"]}),
    "uppercase-host": http(RPS, http={"hosts": ["A.example.com"]}),
    "relative-prefix": http(RPS, http={"pathPrefixes": ["v1/models"]}),
    "no-hosts": http(RPS, http={"hosts": []}),
    "zero-timeout": http(RPS, http={"coldStartTimeoutSeconds": 0}),
    "long-timeout": http(RPS, http={"coldStartTimeoutSeconds": 3601}),
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_keda_http_passes_both_layers(name: str) -> None:
    value = VALID[name]
    assert schema_errors("spec.autoscaling", value) == []
    assert cel_errors("spec.autoscaling", value) == []
    ModelDeployment.parse(md_obj(autoscaling=value))


@pytest.mark.parametrize("name", sorted(INVALID))
def test_keda_http_contradictions_are_rejected_by_cel_and_pydantic(name: str) -> None:
    value, fragment = INVALID[name]
    assert schema_errors("spec.autoscaling", value) == []
    errors = cel_errors("spec.autoscaling", value)
    assert any(fragment in e for e in errors), errors
    with pytest.raises(InvalidSpec) as caught:
        ModelDeployment.parse(md_obj(autoscaling=value))
    assert str(caught.value).startswith("spec.autoscaling") and fragment in str(caught.value)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_http_is_rejected_by_schema_and_pydantic(name: str) -> None:
    value = MALFORMED[name]
    assert schema_errors("spec.autoscaling", value)
    with pytest.raises(InvalidSpec, match=r"^spec\.autoscaling\.http"):
        ModelDeployment.parse(md_obj(autoscaling=value))


# ---------------------------------------------------------------- status


def httpso(*conditions: tuple[str, str, str], minimum: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": {"name": "resnet"},
        "spec": {
            "hosts": HOSTS,
            "replicas": {"min": minimum, "max": 4},
            "timeouts": {"conditionWait": "300s"},
        },
        "status": {
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": f"{r} message"}
                for t, s, r in conditions
            ]
        },
    }


KEDA_HPA = {"status": {"currentReplicas": 1, "desiredReplicas": 2}}
STATUS_CASES: dict[str, tuple[dict[str, Any], Any, tuple[Any, ...]]] = {
    "new": (httpso(), None, (None, None, "Unknown", "AutoscalerPending", "HTTP add-on")),
    "ready-from-zero": (
        httpso(("Ready", "True", "HTTPScaledObjectIsReady")),
        KEDA_HPA,
        (1, 2, "True", "KEDAHTTPAddOnActive", "scale from zero", "interceptor", "300s"),
    ),
    "ready-floor-one": (
        httpso(("Ready", "True", "HTTPScaledObjectIsReady"), minimum=1),
        None,
        (None, None, "True", "KEDAHTTPAddOnActive", "interceptor", HOSTS[0]),
    ),
    "not-ready": (
        httpso(("Ready", "False", "ErrorCreatingAppScaledObject")),
        None,
        (None, None, "False", "ErrorCreatingAppScaledObject", "ErrorCreatingAppScaledObject m"),
    ),
}


@pytest.mark.parametrize("case", sorted(STATUS_CASES))
def test_http_scaled_object_status(case: str) -> None:
    obj, hpa, (current, desired, status, reason, *fragments) = STATUS_CASES[case]
    state = autoscaler_status(obj, hpa=hpa)
    assert (state.current, state.desired) == (current, desired)
    assert (state.condition.status, state.condition.reason) == (status, reason)
    for fragment in fragments:
        assert fragment in state.condition.message


# ---------------------------------------------------------------- reconcile: prune, status


class Store:
    """An API server's objects, enough for reconcile: apply, get, delete, optional CRDs."""

    def __init__(self, *, http_add_on: bool = True) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.http_add_on = http_add_on
        self.deleted: list[str] = []

    async def get(self, api_version: str, plural: str, namespace: str, name: str) -> Any:
        return self.objects.get((plural, name))

    async def apply(self, obj: dict[str, Any], plural: str, **_: Any) -> dict[str, Any]:
        if plural == "httpscaledobjects" and not self.http_add_on:
            raise ApiError(404, "the server could not find the requested resource")
        if "ownerReferences" not in obj["metadata"]:
            return obj  # the replicas hand-over's partial apply
        stored = {**obj, "metadata": {**obj["metadata"], "uid": f"uid-{plural}"}}
        old = self.objects.get((plural, obj["metadata"]["name"]))
        if old and "status" in old:
            stored["status"] = old["status"]  # written by its controller, kept by an apply
        self.objects[(plural, obj["metadata"]["name"])] = stored
        return stored

    async def delete(self, api_version: str, plural: str, namespace: str, name: str, **_: Any):
        self.deleted.append(plural)
        self.objects.pop((plural, name), None)

    async def api_available(self, api_version: str) -> bool:
        return self.http_add_on or api_version != "http.keda.sh/v1alpha1"


def run(store: Store, autoscaling: dict[str, Any] | None, cache: ChildCache) -> dict[str, Any]:
    spec = {"autoscaling": autoscaling} if autoscaling else {}
    result = asyncio.run(reconcile(md_obj(**spec), store, CFG, cache=cache))  # type: ignore[arg-type]
    return result.status


def plurals(store: Store) -> set[str]:
    return {plural for plural, _name in store.objects}


HPA_SPEC = {"maxReplicas": 3, "metrics": [{"type": "cpu", "target": 70}]}
KEDA_SPEC = {"engine": "keda", "maxReplicas": 3, "metrics": [RPS]}
AUTOSCALERS = {"horizontalpodautoscalers", "scaledobjects", "httpscaledobjects"}


@pytest.mark.parametrize(
    ("before", "pruned"),
    [(HPA_SPEC, "horizontalpodautoscalers"), (KEDA_SPEC, "scaledobjects")],
    ids=["hpa", "keda"],
)
def test_switching_to_keda_http_and_back_prunes_the_other_engines_object(
    before: dict[str, Any], pruned: str
) -> None:
    store, cache = Store(), ChildCache()
    run(store, before, cache)
    assert pruned in plurals(store)
    status = run(store, http(), cache)
    assert plurals(store) & AUTOSCALERS == {"httpscaledobjects"}
    assert store.deleted == [pruned]
    assert status["autoscaler"] == {"mode": "keda-http"}
    run(store, before, cache)
    assert plurals(store) & AUTOSCALERS == {pruned}
    assert store.deleted == [pruned, "httpscaledobjects"]
    run(store, None, cache)
    assert not plurals(store) & AUTOSCALERS


def test_a_fresh_process_prunes_an_http_scaled_object_it_did_not_make() -> None:
    store = Store()
    run(store, http(), ChildCache())
    run(store, HPA_SPEC, ChildCache())  # no inventory, first sight: looks up every kind
    assert plurals(store) & AUTOSCALERS == {"horizontalpodautoscalers"}


def test_status_names_the_mode_and_keeps_the_counts_of_the_add_ons_hpa() -> None:
    store, cache = Store(), ChildCache()
    store.objects[("horizontalpodautoscalers", "keda-hpa-resnet")] = {
        "status": {"currentReplicas": 2, "desiredReplicas": 3}
    }
    run(store, http(), cache)
    store.objects[("httpscaledobjects", "resnet")]["status"] = {
        "conditions": [{"type": "Ready", "status": "True", "reason": "HTTPScaledObjectIsReady"}]
    }
    status = run(store, http(), cache)
    assert status["autoscaler"] == {"mode": "keda-http", "currentReplicas": 2, "desiredReplicas": 3}
    cond = next(c for c in status["conditions"] if c["type"] == "AutoscalerReady")
    assert (cond["status"], cond["reason"]) == ("True", "KEDAHTTPAddOnActive")
    assert "scale from zero" in cond["message"] and "interceptor" in cond["message"]


def test_an_unknown_count_is_cleared_once_then_left_out() -> None:
    store, cache = Store(), ChildCache()
    body = md_obj(autoscaling=http())
    body["status"] = {"autoscaler": {"mode": "hpa", "currentReplicas": 2}}
    result = asyncio.run(reconcile(body, store, CFG, cache=cache))  # type: ignore[arg-type]
    assert result.status["autoscaler"] == {"mode": "keda-http", "currentReplicas": None}


def test_without_the_add_on_the_status_says_to_install_it() -> None:
    store = Store(http_add_on=False)
    status = run(store, http(), ChildCache())
    cond = next(c for c in status["conditions"] if c["type"] == "AutoscalerReady")
    assert (cond["status"], cond["reason"]) == ("False", "KEDAHTTPAddOnNotInstalled")
    assert cond["message"] == KEDA_HTTP_NOT_INSTALLED.message
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "KEDAHTTPAddOnNotInstalled")


def test_docs_show_what_the_example_renders() -> None:
    import re
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    docs = (root / "docs" / "autoscaling.md").read_text()
    block = re.search(
        r"becomes \(`examples/keda-http-scale-to-zero.yaml`.*?```yaml\n(.*?)```", docs, re.S
    )
    assert block, "docs/autoscaling.md shows the example's HTTPScaledObject"
    shown = yaml.safe_load(block.group(1))
    example = yaml.safe_load((root / "examples" / "keda-http-scale-to-zero.yaml").read_text())
    obj = autoscaler(ModelDeployment.parse(example), CFG)
    assert obj is not None
    assert shown["spec"] == obj["spec"]
    assert shown["metadata"]["name"] == obj["metadata"]["name"]
