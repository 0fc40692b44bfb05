"""The canary on a real control plane (issue 14): weights follow readiness, rollback from
what the cluster shows, promotion without losing capacity, routes accepted by the real
Gateway API CRDs, and the approximate split seen in the EndpointSlices the real controller
manager builds. Pods' fates come from the node simulator (image tags)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from cluster_env import md, model_deployment
from e2elib import Kube as Tools
from kubeapi import Kube, condition, eventually

pytestmark = pytest.mark.usefixtures("operator", "scheduler")
ROUTES = "gateway.networking.k8s.io/v1"
V2 = {"uri": "s3://models/mnist-v2/"}
GATEWAY = {"name": "public"}


def deployment(kube: Kube, namespace: str, name: str) -> Any:
    return kube.get("apps/v1", "deployments", namespace, name)


def available(obj: Any) -> int:
    return int(((obj or {}).get("status") or {}).get("availableReplicas", 0))


def canary_status(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return ((md(kube, namespace, name) or {}).get("status") or {}).get("canary") or {}


def canary_ready(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return condition(md(kube, namespace, name), "CanaryReady") or {}


def weights(route: Any) -> list[tuple[str, int]]:
    refs = route["spec"]["rules"][0]["backendRefs"]
    return [(ref["name"], ref.get("weight", 1)) for ref in refs]


def test_a_ready_canary_gets_its_weight_on_accepted_routes(
    kube: Kube, tools: Tools, namespace: str, third_party_crds: Path
) -> None:
    name = "split"
    canary = {"model": V2, "trafficPercent": 10}
    tools.apply(model_deployment(name, namespace, replicas=2, gateway=GATEWAY, canary=canary))

    def weighted() -> Any:
        route = kube.get(ROUTES, "httproutes", namespace, name)
        return route if route and len(weights(route)) == 2 else None

    route = eventually(weighted, timeout=60, what="the HTTPRoute with the canary's weight")
    assert weights(route) == [(f"{name}-stable", 90), (f"{name}-canary", 10)]
    # Weight only once every canary pod is available.
    assert available(deployment(kube, namespace, f"{name}-canary")) == 1
    grpc = kube.get(ROUTES, "grpcroutes", namespace, name)
    assert grpc is not None and weights(grpc) == [(f"{name}-stable", 90), (f"{name}-canary", 10)]
    status = eventually(
        lambda: (s := canary_status(kube, namespace, name)).get("state") == "Weighted" and s,
        timeout=30,
        what="status.canary Weighted",
    )
    assert status["traffic"] == "stable 90 / canary 10" and status["mode"] == "gateway"
    assert canary_ready(kube, namespace, name)["status"] == "True"
    for svc, track in ((f"{name}-stable", "stable"), (f"{name}-canary", "canary")):
        selector = kube.get("v1", "services", namespace, svc)["spec"]["selector"]
        assert selector["kubeserve.io/track"] == track


def test_a_never_ready_canary_gets_no_traffic_and_is_rolled_back(
    kube: Kube, tools: Tools, namespace: str, third_party_crds: Path
) -> None:
    name = "stuck"
    canary = {"model": V2, "trafficPercent": 10, "image": "example.com/onnx:never-ready",
              "progressDeadlineSeconds": 30}  # fmt: skip
    tools.apply(model_deployment(name, namespace, replicas=1, gateway=GATEWAY, canary=canary))
    stable_before = eventually(
        lambda: available(d := deployment(kube, namespace, name)) == 1 and d,
        timeout=60,
        what="stable available",
    )
    started = time.monotonic()

    def rolled_back() -> Any:
        route = kube.get(ROUTES, "httproutes", namespace, name)
        # Never a weight for the canary, at any point of the wait.
        assert route is None or weights(route) == [(f"{name}-stable", 1)], weights(route)
        cond = canary_ready(kube, namespace, name)
        return cond if cond.get("reason") == "RolledBack" else None

    cond = eventually(rolled_back, timeout=120, step=0.5, what="the canary rolled back")
    assert time.monotonic() - started < 30 + 60  # its deadline plus the controllers' lag
    assert "ProgressDeadlineExceeded" in cond["message"]
    assert deployment(kube, namespace, f"{name}-canary")["spec"]["replicas"] == 0
    stable = deployment(kube, namespace, name)
    assert stable["metadata"]["generation"] == stable_before["metadata"]["generation"]
    assert condition(md(kube, namespace, name), "Ready")["status"] == "True"
    assert canary_status(kube, namespace, name)["traffic"] == "stable 100 / canary 0"
    events = kube.list("v1", "events", namespace)
    assert any(e.get("reason") == "CanaryRolledBack" for e in events)


def test_a_crash_looping_canary_is_rolled_back(kube: Kube, tools: Tools, namespace: str) -> None:
    name = "loop"
    canary = {"model": V2, "trafficPercent": 50, "image": "example.com/onnx:crashloop"}
    tools.apply(model_deployment(name, namespace, replicas=1, canary=canary))
    cond = eventually(
        lambda: (c := canary_ready(kube, namespace, name)).get("reason") == "RolledBack" and c,
        timeout=60,
        what="the crash-looping canary rolled back",
    )
    assert "crash-looping" in cond["message"]
    eventually(
        lambda: deployment(kube, namespace, f"{name}-canary")["spec"]["replicas"] == 0,
        timeout=10,
        what="canary at 0",
    )
    assert condition(md(kube, namespace, name), "Ready")["status"] == "True"


def test_the_approximate_split_is_nine_stable_and_one_canary_ready_endpoint(
    kube: Kube, tools: Tools, namespace: str
) -> None:
    name = "approx"
    tools.apply(model_deployment(name, namespace, replicas=9,
                                 canary={"model": V2, "trafficPercent": 10}))  # fmt: skip

    def split() -> tuple[int, int] | None:
        slices = kube.list("discovery.k8s.io/v1", "endpointslices", namespace)
        pods = {
            (ep.get("targetRef") or {}).get("name", "")
            for s in slices
            if (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == name
            for ep in s.get("endpoints") or []
            if (ep.get("conditions") or {}).get("ready")
        }
        canary = sum(p.startswith(f"{name}-canary-") for p in pods)
        counts = (len(pods) - canary, canary)
        return counts if counts == (9, 1) else None

    assert eventually(split, timeout=90, step=0.5, what="9 stable and 1 canary endpoint")
    status = eventually(
        lambda: (
            (s := canary_status(kube, namespace, name)).get("traffic") == "stable 90 / canary 10"
            and s
        ),
        timeout=30,
        what="status: stable 90 / canary 10",
    )
    assert status["mode"] == "service" and "Ready" in status["message"]


def test_promotion_keeps_the_stable_capacity_ready_at_every_step(
    kube: Kube, tools: Tools, namespace: str, third_party_crds: Path
) -> None:
    name = "promo"
    replicas = 2
    tools.apply(model_deployment(name, namespace, replicas=replicas, gateway=GATEWAY,
                                 canary={"model": V2, "trafficPercent": 20}))  # fmt: skip
    eventually(
        lambda: canary_status(kube, namespace, name).get("state") == "Weighted",
        timeout=60,
        what="the canary weighted",
    )
    stable_pods_before = {
        p["metadata"]["name"]
        for p in kube.list("v1", "pods", namespace)
        if p["metadata"]["name"].startswith(f"{name}-") and "-canary-" not in p["metadata"]["name"]
    }
    tools.apply(model_deployment(name, namespace, replicas=replicas, gateway=GATEWAY, model=V2))
    deadline = time.monotonic() + 120
    lowest = replicas
    while time.monotonic() < deadline:
        stable = deployment(kube, namespace, name)
        canary = deployment(kube, namespace, f"{name}-canary")
        lowest = min(lowest, available(stable) + available(canary))
        assert lowest >= replicas, f"capacity dropped to {lowest}"
        if canary is None and condition(md(kube, namespace, name), "Ready")["status"] == "True":
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the promotion did not finish in 120 s")
    route = kube.get(ROUTES, "httproutes", namespace, name)
    assert weights(route) == [(f"{name}-stable", 1)]
    assert kube.get("v1", "services", namespace, f"{name}-canary") is None
    stable_pods_after = {
        p["metadata"]["name"]
        for p in kube.list("v1", "pods", namespace)
        if p["metadata"]["name"].startswith(f"{name}-") and not p["metadata"].get(
            "deletionTimestamp")
    }  # fmt: skip
    assert not stable_pods_before & stable_pods_after  # each stable pod restarted once
