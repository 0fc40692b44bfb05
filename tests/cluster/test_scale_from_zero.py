"""engine keda-http on a real control plane with the KEDA HTTP add-on's real CRD.

The add-on itself (its operator, scaler and interceptor) does not run here: what is judged
is what we generate, the CRD's acceptance of it (its CEL rule on scaleTargetRef included),
our RBAC for it, the Deployment's replicas left to KEDA, the status naming the mode, and the
pruning when the engine changes. The hold-and-release of a request at zero replicas needs
the real interceptor: the kind e2e suite is where it would run (tests/e2e).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from cluster_env import md, model_deployment
from e2elib import Kube as Tools
from kubeapi import ApiFailure, Kube, condition, eventually

pytestmark = pytest.mark.usefixtures("operator", "scheduler")
HTTP_API = ("http.keda.sh/v1alpha1", "httpscaledobjects")
FIELD_MANAGER = "kubeserve"  # the operator's default (config.py)


def keda_http(**extra: Any) -> dict[str, Any]:
    return {
        "engine": "keda-http",
        "minReplicas": 0,
        "maxReplicas": 3,
        "metrics": [{"type": "requestsPerSecond", "target": 10}],
        **extra,
    }


def http_scaled_object(kube: Kube, namespace: str, name: str) -> Any:
    return kube.get(*HTTP_API, namespace, name)


def manages_replicas(deployment: dict[str, Any], manager: str) -> bool:
    return any(
        entry.get("manager") == manager
        and "f:replicas" in (entry.get("fieldsV1") or {}).get("f:spec", {})
        for entry in deployment["metadata"].get("managedFields") or []
    )


def test_keda_http_generates_an_accepted_http_scaled_object_and_prunes_it_on_a_switch(
    kube: Kube, tools: Tools, namespace: str, third_party_crds: Path
) -> None:
    name = "wake"
    tools.apply(model_deployment(name, namespace, autoscaling=keda_http()))
    obj = eventually(
        lambda: http_scaled_object(kube, namespace, name), timeout=30, what="the HTTPScaledObject"
    )
    spec = obj["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment", "name": name, "service": name,
        "port": 8080,
    }  # fmt: skip
    assert spec["replicas"] == {"min": 0, "max": 3}
    assert spec["scalingMetric"] == {
        "requestRate": {"targetValue": 10, "window": "1m", "granularity": "1s"}
    }
    assert spec["hosts"] == [
        f"{name}.{namespace}.svc.cluster.local", f"{name}.{namespace}.svc", f"{name}.{namespace}",
    ]  # fmt: skip
    assert spec["timeouts"] == {"conditionWait": "300s"}
    owner = md(kube, namespace, name)
    assert owner is not None
    (ref,) = obj["metadata"]["ownerReferences"]
    assert (ref["kind"], ref["uid"], ref["controller"]) == (
        "ModelDeployment", owner["metadata"]["uid"], True,
    )  # fmt: skip
    # No ScaledObject and no HPA from us: the add-on makes its own.
    assert kube.get("keda.sh/v1alpha1", "scaledobjects", namespace, name) is None
    assert kube.get("autoscaling/v2", "horizontalpodautoscalers", namespace, name) is None

    # The CRD's CEL rule is live: what we generate passes it, a contradiction does not.
    twin = copy.deepcopy(obj)
    twin["metadata"] = {"name": "twin", "namespace": namespace}
    twin["spec"]["scaleTargetRef"]["portName"] = "http"
    twin.pop("status", None)
    with pytest.raises(ApiFailure) as refused:
        kube.create(twin, HTTP_API[1])
    assert refused.value.status == 422 and "portName" in str(refused.value)

    # The Deployment's replicas are KEDA's: our field manager never sets them.
    deployment = eventually(
        lambda: kube.get("apps/v1", "deployments", namespace, name), timeout=30,
        what="the Deployment",
    )  # fmt: skip
    assert not manages_replicas(deployment, FIELD_MANAGER)

    # The status says the mode; the add-on has not looked at the object yet.
    def pending() -> dict[str, Any] | None:
        found = md(kube, namespace, name) or {}
        cond = condition(found, "AutoscalerReady") or {}
        mode = (found.get("status", {}).get("autoscaler") or {}).get("mode")
        return found if mode == "keda-http" and cond.get("reason") == "AutoscalerPending" else None

    found = eventually(pending, timeout=30, what="status.autoscaler.mode keda-http")
    assert "HTTP add-on" in condition(found, "AutoscalerReady")["message"]

    # What the add-on's operator writes once it has set up routing and its ScaledObject.
    kube.patch(
        *HTTP_API, namespace, name,
        {"status": {"conditions": [{
            "type": "Ready", "status": "True", "reason": "HTTPScaledObjectIsReady",
            "message": "Finished object creation", "lastTransitionTime": "2025-01-01T00:00:00Z",
        }]}},
        subresource="status",
    )  # fmt: skip
    # KEDA's objects are not watched: a spec change (or the resync) reads the status again.
    tools.apply(model_deployment(name, namespace, autoscaling=keda_http(maxReplicas=4)))

    def active() -> dict[str, Any] | None:
        cond = condition(md(kube, namespace, name), "AutoscalerReady") or {}
        return cond if cond.get("reason") == "KEDAHTTPAddOnActive" else None

    cond = eventually(active, timeout=30, what="AutoscalerReady KEDAHTTPAddOnActive")
    assert cond["status"] == "True"
    assert "scale from zero" in cond["message"] and "interceptor" in cond["message"]
    assert http_scaled_object(kube, namespace, name)["spec"]["replicas"]["max"] == 4

    # Switching to the HPA prunes the HTTPScaledObject.
    hpa = {"minReplicas": 1, "maxReplicas": 3, "metrics": [{"type": "cpu", "target": 70}]}
    tools.apply(model_deployment(name, namespace, autoscaling=hpa))
    eventually(
        lambda: http_scaled_object(kube, namespace, name) is None
        and kube.get("autoscaling/v2", "horizontalpodautoscalers", namespace, name),
        timeout=30, what="the HTTPScaledObject pruned, the HPA made",
    )  # fmt: skip
    eventually(
        lambda: ((md(kube, namespace, name) or {}).get("status", {}).get("autoscaler") or {})
        .get("mode") == "hpa",
        timeout=30, what="status.autoscaler.mode hpa",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("metrics", "fragment"),
    [
        ([{"type": "concurrency", "target": 2.5}], "whole number"),
        ([{"type": "cpu", "target": 70}], "exactly one metric"),
        ([{"type": "requestsPerSecond", "target": 5, "query": "sum(x)"}], "remove query"),
    ],
    ids=["fractional-target", "cpu", "query"],
)
def test_the_api_server_refuses_what_keda_http_cannot_do(
    tools: Tools, namespace: str, metrics: list[dict[str, Any]], fragment: str
) -> None:
    body = model_deployment("refused", namespace, autoscaling=keda_http(metrics=metrics))
    result = tools.kubectl("apply", "-f", "-", input=json.dumps(body), check=False)
    assert result.returncode != 0
    assert fragment in result.stderr, result.stderr


def test_a_whole_target_written_as_a_float_is_admitted(
    tools: Tools, kube: Kube, namespace: str
) -> None:
    # The CRD's number is a CEL double: 5.0 passes the whole-number rule, as 5 does.
    scaling = keda_http(metrics=[{"type": "concurrency", "target": 5.0}])
    tools.apply(model_deployment("whole", namespace, autoscaling=scaling))
    assert md(kube, namespace, "whole") is not None
