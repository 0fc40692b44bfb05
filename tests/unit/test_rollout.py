"""The canary controller's decisions (rollout.plan): weight follows readiness, rollback from
what the cluster shows, promotion keeps the canary until the new stable is out."""

from __future__ import annotations

from typing import Any

from kubeserve.api import ModelDeployment
from kubeserve.config import OperatorConfig
from kubeserve.render import render
from kubeserve.rollout import (
    ROLLBACK_CAUSE_ANNOTATION,
    ROLLED_BACK_ANNOTATION,
    SHAPE_ANNOTATION,
    Observed,
    canary_shape,
    crash_loop,
    plan,
    pod_shape,
)

CFG = OperatorConfig()
GW = OperatorConfig(gateway=("infra", "shared"))
V2 = {"model": {"uri": "s3://models/resnet-v2"}, "trafficPercent": 10}


def md(**spec: Any) -> ModelDeployment:
    return ModelDeployment.parse(
        {
            "apiVersion": "kubeserve.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "resnet", "namespace": "ml", "uid": "u-1"},
            "spec": {
                "runtime": "onnxruntime",
                "model": {"uri": "s3://models/resnet-v1"},
                "replicas": 9,
                **spec,
            },
        }
    )


def deployment(
    replicas: int, available: int, *, shape: str = "", generation: int = 1, **notes: str
) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation, "annotations": {SHAPE_ANNOTATION: shape, **notes}},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": available,
            "readyReplicas": available,
        },
    }


def test_the_weight_moves_only_when_every_canary_pod_is_ready() -> None:
    m = md(canary=V2)
    shape = canary_shape(m)
    pending = plan(m, GW, Observed(canary=deployment(1, 0, shape=shape)))
    assert (pending.percent, pending.replicas, pending.status["state"]) == (0, 1, "Pending")
    assert pending.verdict is not None and pending.verdict.status == "False"
    ready = plan(m, GW, Observed(canary=deployment(1, 1, shape=shape)))
    assert (ready.percent, ready.status["traffic"]) == (10, "stable 90 / canary 10")
    assert ready.verdict is not None and ready.verdict.reason == "Serving"
    route = next(c for c in render(m, GW, ready) if c["kind"] == "HTTPRoute")
    weights = [r["weight"] for r in route["spec"]["rules"][0]["backendRefs"]]
    assert weights == [90, 10]


def test_a_canary_of_an_older_shape_gets_no_weight() -> None:
    m = md(canary=V2)
    assert plan(m, GW, Observed(canary=deployment(1, 1, shape="old"))).percent == 0


def test_without_a_gateway_the_split_is_approximate_and_sized_from_pods() -> None:
    m = md(canary=V2)
    p = plan(m, CFG, Observed(canary=deployment(1, 1, shape=canary_shape(m)),
                              stable=deployment(9, 9)))  # fmt: skip
    assert p.replicas == 1
    assert p.status is not None and p.status["mode"] == "service"
    assert p.status["traffic"] == "stable 90 / canary 10" and p.status["approximate"]
    assert "Ready" in p.status["message"]


def test_deadline_exceeded_rolls_back_weight_first_and_records_the_shape() -> None:
    m = md(canary=V2)
    shape = canary_shape(m)
    live = deployment(1, 0, shape=shape)
    live["status"]["conditions"] = [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    ]
    p = plan(m, GW, Observed(canary=live))
    assert (p.replicas, p.percent) == (0, 0)
    assert p.verdict is not None and p.verdict.reason == "RolledBack"
    assert "ProgressDeadlineExceeded" in p.verdict.message
    assert p.events and p.events[0][1] == "CanaryRolledBack"
    children = render(m, GW, p)
    names = [(c["kind"], c["metadata"]["name"]) for c in children]
    assert names.index(("HTTPRoute", "resnet")) < names.index(("Deployment", "resnet-canary"))
    canary = next(c for c in children if c["metadata"]["name"] == "resnet-canary"
                  and c["kind"] == "Deployment")  # fmt: skip
    assert canary["spec"]["replicas"] == 0
    assert canary["metadata"]["annotations"][ROLLED_BACK_ANNOTATION] == shape
    # The next reconcile sees the annotation: still rolled back, no second event.
    again = plan(m, GW, Observed(canary=canary))
    assert again.replicas == 0 and again.verdict is not None
    assert again.verdict.reason == "RolledBack" and not again.events


def test_a_changed_canary_is_retried_and_a_traffic_edit_is_not() -> None:
    m = md(canary=V2)
    shape = canary_shape(m)
    notes = {ROLLED_BACK_ANNOTATION: shape, ROLLBACK_CAUSE_ANNOTATION: "x"}
    rolled = deployment(0, 0, shape=shape, **notes)
    assert plan(md(canary={**V2, "trafficPercent": 20}), GW, Observed(canary=rolled)).replicas == 0
    v3 = md(canary={**V2, "model": {"uri": "s3://models/resnet-v3"}})
    assert plan(v3, GW, Observed(canary=rolled)).replicas == 1


def test_crash_loop_from_the_pods() -> None:
    looping = {"metadata": {"name": "p"}, "status": {"containerStatuses": [
        {"name": "server", "restartCount": 1,
         "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}  # fmt: skip
    restarts = {"metadata": {"name": "q"}, "status": {"containerStatuses": [
        {"name": "server", "restartCount": 3, "state": {"running": {}}}]}}  # fmt: skip
    healthy = {"metadata": {"name": "r"}, "status": {"containerStatuses": [
        {"name": "server", "restartCount": 0, "state": {"running": {}}}]}}  # fmt: skip
    assert crash_loop([healthy]) is None
    assert crash_loop([looping]) and crash_loop([restarts])
    m = md(canary=V2)
    p = plan(m, GW, Observed(canary=deployment(1, 0, shape=canary_shape(m)), pods=[looping]))
    assert p.replicas == 0 and p.verdict is not None and "crash-looping" in p.verdict.message


def test_an_analysis_breach_rolls_back() -> None:
    m = md(canary=V2)
    p = plan(m, GW, Observed(canary=deployment(1, 1, shape=canary_shape(m))), breach="5% errors")
    assert p.replicas == 0 and p.verdict is not None and "5% errors" in p.verdict.message


def test_promotion_keeps_the_canary_until_the_new_stable_is_out() -> None:
    promoted = md(model={"uri": "s3://models/resnet-v2"})
    assert pod_shape(promoted) == canary_shape(md(canary=V2))
    canary = deployment(1, 1, shape=pod_shape(promoted))
    refs = [{"name": "resnet-stable", "weight": 90}, {"name": "resnet-canary", "weight": 10}]
    route = {"spec": {"rules": [{"backendRefs": refs}]}}
    rolling = deployment(9, 7, generation=2)
    rolling["status"]["updatedReplicas"] = 3
    p = plan(promoted, GW, Observed(canary=canary, stable=rolling, route=route))
    assert p.keep and p.percent == 10 and p.stable_max_unavailable == 1
    assert p.verdict is not None and p.verdict.reason == "Promoting"
    stable = next(c for c in render(promoted, GW, p) if c["metadata"]["name"] == "resnet"
                  and c["kind"] == "Deployment")  # fmt: skip
    assert stable["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 1
    # Stable complete: weight back to stable first, the canary is kept one more round.
    done = plan(promoted, GW, Observed(canary=canary, stable=deployment(9, 9, generation=2),
                                       route=route))  # fmt: skip
    assert done.keep and done.percent == 0
    # Route moved: the canary goes.
    gone = plan(promoted, GW, Observed(canary=canary, stable=deployment(9, 9, generation=2)))
    assert not gone.keep and not gone.render_canary


def test_mirror_without_a_gateway_creates_no_canary() -> None:
    p = plan(md(canary={**V2, "mirror": True}), CFG, Observed())
    assert not p.render_canary and p.verdict is not None
    assert p.verdict.reason == "MirrorNeedsGateway"


def test_the_analysis_hook_counts_breaches_to_the_failure_limit(monkeypatch: Any) -> None:
    import asyncio

    from kubeserve import analysis, rollout

    async def breach(*_: Any, **__: Any) -> analysis.AnalysisVerdict:
        return analysis.AnalysisVerdict.breach("error ratio 0.5 > 0.01")

    monkeypatch.setattr(analysis, "evaluate", breach)
    m = md(canary={**V2, "analysis": {"maxErrorRatio": 0.01, "failureLimit": 2}})
    assert asyncio.run(rollout.analysis_breach(md(canary=V2), CFG)) == (None, None)
    first = asyncio.run(rollout.analysis_breach(m, CFG))
    assert first == (None, 1)
    second = asyncio.run(rollout.analysis_breach(m, CFG, {"canary": {"analysisFailures": 1}}))
    assert second == ("error ratio 0.5 > 0.01", 2)
