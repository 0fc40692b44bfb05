"""The canary end to end on a real control plane (issue 14).

- Analysis through the operator: a real Prometheus scrapes two real ONNX Runtime servers
  (`kubeserve serve`) on 127.0.0.1, labelled with the namespace and the real names of a
  ModelDeployment's stable and canary pods (read from the API). The canary server is sent
  failing requests (HTTP 400, a wrong input name); an operator whose
  KUBESERVE_PROMETHEUS_URL is that Prometheus rolls the canary back.
- Mirroring: with a Gateway, the HTTPRoute copies requests to the canary (a RequestMirror
  filter the real Gateway API CRD accepts) and gives it no weight; without one it is refused.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from cluster_env import Operator, Tools, md, model_deployment, service_account_kubeconfig
from envtest import ControlPlane
from kubeapi import Kube, condition, eventually
from promlib import PROMETHEUS, JsonPost, Load, Target
from promlib import prometheus as run_prometheus

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtimes"))
from fixtures_local import TINY_MODEL, serving, write_md

from kubeserve.cli import main as kubeserve_main

pytestmark = pytest.mark.usefixtures("scheduler")
ROUTES = "gateway.networking.k8s.io/v1"
V2 = {"uri": "s3://models/mnist-v2/"}
GATEWAY = {"name": "public"}
TRACK = "kubeserve.io/track"
ROW = [0.5, -1.0, 2.0, 0.25]
LOAD_SECONDS = 60.0


def _deployment(kube: Kube, namespace: str, name: str) -> Any:
    return kube.get("apps/v1", "deployments", namespace, name)


def _canary_ready(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return condition(md(kube, namespace, name), "CanaryReady") or {}


def _canary_status(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return ((md(kube, namespace, name) or {}).get("status") or {}).get("canary") or {}


def _weights(route: Any) -> list[tuple[str, int]]:
    refs = route["spec"]["rules"][0]["backendRefs"]
    return [(ref["name"], ref.get("weight", 1)) for ref in refs]


def _ready_pod(kube: Kube, namespace: str, name: str, track: str) -> str | None:
    for pod in kube.list("v1", "pods", namespace):
        meta = pod["metadata"]
        if (meta.get("labels") or {}).get(TRACK) != track or meta.get("deletionTimestamp"):
            continue
        if not meta["name"].startswith(f"{name}-"):
            continue
        ready = condition(pod, "Ready") or {}
        if ready.get("status") == "True":
            return str(meta["name"])
    return None


def _v2(input_name: str) -> dict[str, Any]:
    return {"inputs": [{"name": input_name, "shape": [1, 4], "datatype": "FP32", "data": ROW}]}


def test_the_analysis_query_rolls_a_failing_canary_back_through_the_operator(
    kube: Kube,
    tools: Tools,
    control_plane: ControlPlane,
    namespace: str,
    third_party_crds: Path,
    session_operator_paused: None,
    tmp_path: Path,
) -> None:
    assert PROMETHEUS, "prometheus is not installed (apt-get install prometheus)"
    name = "judged"
    canary = {
        "model": V2,
        "trafficPercent": 50,
        "analysis": {"intervalSeconds": 15, "failureLimit": 1, "maxErrorRatio": 0.05},
    }
    config = service_account_kubeconfig(tools, control_plane, "operator-e2e")
    # Until Prometheus runs (it needs the pods' names), analysis answers unknown: no rollback.
    # A short resync makes the operator look again well within the test's bound.
    env = {"KUBESERVE_PROMETHEUS_URL": "http://127.0.0.1:9", "KUBESERVE_RESYNC_SECONDS": "5"}
    op = Operator(config, tmp_path / "operator", env=env, name="analysis")
    (tmp_path / "operator").mkdir()
    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        status = kubeserve_main(["package", TINY_MODEL, "--input-shape", "1,4",
                                 "--format", "onnx", "-o", str(tmp_path / "onnx")])  # fmt: skip
    assert status == 0, stderr.getvalue()
    load_thread: threading.Thread | None = None
    try:
        op.start()
        tools.apply(model_deployment(name, namespace, replicas=1, gateway=GATEWAY, canary=canary))
        eventually(
            lambda: _canary_status(kube, namespace, name).get("state") == "Weighted",
            timeout=90,
            what="the canary weighted",
        )
        stable_pod = eventually(
            lambda: _ready_pod(kube, namespace, name, "stable"), timeout=30, what="stable pod"
        )
        canary_pod = eventually(
            lambda: _ready_pod(kube, namespace, name, "canary"), timeout=30, what="canary pod"
        )
        assert canary_pod.startswith(f"{name}-canary-"), canary_pod
        route = kube.get(ROUTES, "httproutes", namespace, name)
        assert _weights(route) == [(f"{name}-stable", 50), (f"{name}-canary", 50)]
        stable_before = _deployment(kube, namespace, name)
        op.stop()

        with contextlib.ExitStack() as stack:
            served = {}
            for pod in (stable_pod, canary_pod):
                spec = write_md(tmp_path / f"{pod}.yaml", "tiny", "onnxruntime",
                                str(tmp_path / "onnx"))  # fmt: skip
                served[pod] = stack.enter_context(serving(spec, tmp=tmp_path))

            def target(pod: str) -> Target:
                parts = urllib.parse.urlsplit(served[pod].extra["metrics"])
                return Target(pod, parts.netloc, parts.path, {"namespace": namespace, "pod": pod})

            prom = stack.enter_context(
                run_prometheus(tmp_path / "prom", [target(stable_pod), target(canary_pod)])
            )
            load = Load()
            load.add("stable", 1, JsonPost(served[stable_pod].url + "/infer", _v2("input")))
            load.add("canary", 1, JsonPost(served[canary_pod].url + "/infer", _v2("input")))
            # The wrong input name: HTTP 400 from the canary server's real validation.
            load.add("canary-bad", 1, JsonPost(served[canary_pod].url + "/infer", _v2("nosuch")))
            load_thread = threading.Thread(target=load.run, args=(LOAD_SECONDS,), daemon=True)
            load_thread.start()

            op.extra_env["KUBESERVE_PROMETHEUS_URL"] = prom.url
            op.start()

            def rolled_back() -> dict[str, Any] | None:
                cond = _canary_ready(kube, namespace, name)
                return cond if cond.get("reason") == "RolledBack" else None

            cond = eventually(rolled_back, timeout=LOAD_SECONDS - 5, step=0.5,
                              what="the analysis to roll the canary back")  # fmt: skip
            assert cond["status"] == "False"
            assert "analysis breached" in cond["message"], cond
            assert "error ratio" in cond["message"], cond
            route = eventually(
                lambda: (
                    (r := kube.get(ROUTES, "httproutes", namespace, name))
                    and _weights(r) == [(f"{name}-stable", 1)]
                    and r
                ),
                timeout=10,
                what="the canary's weight at 0",
            )
            assert all(ref["name"] != f"{name}-canary" for ref in route["spec"]["rules"][0]
                       ["backendRefs"])  # fmt: skip
            assert _deployment(kube, namespace, f"{name}-canary")["spec"]["replicas"] == 0
            stable = _deployment(kube, namespace, name)
            assert stable["metadata"]["generation"] == stable_before["metadata"]["generation"]
            assert stable["spec"]["replicas"] == 1
            status = _canary_status(kube, namespace, name)
            assert status["traffic"] == "stable 100 / canary 0", status
            assert int(status.get("analysisFailures") or 0) >= 1, status
            events = kube.list("v1", "events", namespace)
            assert any(e.get("reason") == "CanaryRolledBack" for e in events)
            load_thread.join(LOAD_SECONDS + 90)
            measured = load.measured
            assert measured["canary-bad"].requests == 0 and measured["canary-bad"].failures > 0
            assert measured["stable"].failures == 0 and measured["canary"].failures == 0
    finally:
        op.stop()
        if load_thread is not None:
            load_thread.join(LOAD_SECONDS + 90)


@pytest.mark.usefixtures("operator")
def test_a_mirrored_canary_gets_copies_and_no_weight_on_an_accepted_route(
    kube: Kube, tools: Tools, namespace: str, third_party_crds: Path
) -> None:
    name = "shadow"
    canary = {"model": V2, "trafficPercent": 20, "mirror": True}
    tools.apply(model_deployment(name, namespace, replicas=1, gateway=GATEWAY, canary=canary))

    def mirrored() -> Any:
        route = kube.get(ROUTES, "httproutes", namespace, name)
        filters = (route or {}).get("spec", {}).get("rules", [{}])[0].get("filters") or []
        return route if filters else None

    route = eventually(mirrored, timeout=90, what="the HTTPRoute with a RequestMirror filter")
    rule = route["spec"]["rules"][0]
    assert rule["filters"] == [
        {
            "type": "RequestMirror",
            "requestMirror": {
                # group and kind: the real CRD's defaults, so it went through its schema
                "backendRef": {
                    "group": "",
                    "kind": "Service",
                    "name": f"{name}-canary",
                    "port": rule["backendRefs"][0]["port"],
                },
                "percent": 20,
            },
        }
    ], rule["filters"]
    # The canary's answers are dropped: it is no backend of the route, only a mirror.
    assert _weights(route) == [(f"{name}-stable", 1)]
    assert kube.get("v1", "services", namespace, f"{name}-canary") is not None
    status = eventually(
        lambda: (s := _canary_status(kube, namespace, name)).get("state") == "Weighted" and s,
        timeout=30,
        what="status.canary Weighted",
    )
    assert status["traffic"] == "stable 100 / mirror 20", status
    assert status["mirrorPercent"] == 20 and status["trafficPercent"] == 0, status
    assert _canary_ready(kube, namespace, name)["status"] == "True"


@pytest.mark.usefixtures("operator")
def test_mirroring_without_a_gateway_is_refused_with_a_condition(
    kube: Kube, tools: Tools, namespace: str, third_party_crds: Path
) -> None:
    name = "nogw"
    canary = {"model": V2, "trafficPercent": 20, "mirror": True}
    tools.apply(model_deployment(name, namespace, replicas=1, canary=canary))
    cond = eventually(
        lambda: (
            (c := _canary_ready(kube, namespace, name)).get("reason") == "MirrorNeedsGateway" and c
        ),
        timeout=60,
        what="CanaryReady=False MirrorNeedsGateway",
    )
    assert cond["status"] == "False"
    assert "canary.mirror needs a Gateway" in cond["message"], cond
    assert _deployment(kube, namespace, f"{name}-canary") is None
    assert kube.get(ROUTES, "httproutes", namespace, name) is None
    status = _canary_status(kube, namespace, name)
    assert status.get("state") == "Pending", status
