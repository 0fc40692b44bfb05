"""Issue 14: the canary's spare-GPU check and analysis once per intervalSeconds."""

from __future__ import annotations

from typing import Any

from test_scheduling import A100, a100, l4, node

from kubeserve.api import ModelDeployment
from kubeserve.config import OperatorConfig
from kubeserve.rollout import analysis_wait
from kubeserve.scheduling import (
    NO_SPARE_GPU_FOR_CANARY,
    bound_devices,
    canary_spare_gpus,
    devices_in_use,
    node_summary,
)

CFG = OperatorConfig()
V2 = {"model": {"uri": "s3://models/resnet-v2"}, "trafficPercent": 10}
GPU2 = {"count": 2, "product": [A100]}


def md(**spec: Any) -> ModelDeployment:
    return ModelDeployment.parse(
        {
            "apiVersion": "kubeserve.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "resnet", "namespace": "ml"},
            "spec": {"runtime": "onnxruntime", "model": {"uri": "s3://models/m"}, **spec},
        }
    )


def pod(node_name: str | None, gpus: str = "2", phase: str = "Running") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {"name": "server", "resources": {"limits": {"nvidia.com/gpu": gpus, "cpu": "4"}}},
            {"name": "sidecar", "resources": {"requests": {"cpu": "100m"}}},
        ]
    }
    if node_name:
        spec["nodeName"] = node_name
    return {"metadata": {"name": "p"}, "spec": spec, "status": {"phase": phase}}


def test_bound_devices_counts_bound_live_pods_only() -> None:
    assert bound_devices(pod("a")) == ("a", {"nvidia.com/gpu": 2})
    assert bound_devices(pod(None)) is None  # Pending, not yet bound
    assert bound_devices(pod("a", phase="Succeeded")) is None
    assert bound_devices(pod("a", gpus="0")) is None
    used = devices_in_use([bound_devices(pod("a")), bound_devices(pod("a", "3")), None])
    assert used == {"a": {"nvidia.com/gpu": 5}}


def test_enough_spare_gpus_or_nothing_known_says_nothing() -> None:
    m = md(gpu=GPU2, canary=V2)
    nodes = [a100("a"), a100("b")]
    assert canary_spare_gpus(m, nodes, {"a": {"nvidia.com/gpu": 8}}, CFG, unplaced=2) is None
    assert canary_spare_gpus(m, nodes, None, CFG, unplaced=8) is None  # 16 free, 8 pods x 2
    assert canary_spare_gpus(m, None, None, CFG, unplaced=1) is None  # may not list Nodes
    assert canary_spare_gpus(m, nodes, None, CFG, unplaced=0) is None  # all placed
    assert canary_spare_gpus(md(canary=V2), nodes, None, CFG, unplaced=1) is None  # no GPU
    # No matching node at all: Schedulable (NoMatchingNodes) already says so.
    assert canary_spare_gpus(m, [l4("x")], None, CFG, unplaced=1) is None


def test_no_spare_gpu_for_the_canary_names_what_is_free() -> None:
    m = md(gpu=GPU2, canary=V2)
    # a: 8 - 7 = 1 free (not enough for a pod of 2), b: 8 - 6 = 2 free, c is an L4 (no match),
    # d is cordoned. Room for 1 pod; 2 are needed.
    nodes = [a100("a"), a100("b"), l4("c"), a100("d", cordoned=True)]
    used = {"a": {"nvidia.com/gpu": 7}, "b": {"nvidia.com/gpu": 6}, "d": {}}
    verdict = canary_spare_gpus(m, nodes, used, CFG, unplaced=2)
    assert verdict is not None
    assert (verdict.type, verdict.status, verdict.reason) == (
        "Schedulable",
        "False",
        NO_SPARE_GPU_FOR_CANARY,
    )
    assert "2 pods x 2 nvidia.com/gpu" in verdict.message
    assert "free on matching nodes: b 2, a 1 (room for 1)" in verdict.message
    assert "other GPU workloads are not seen" in verdict.message
    # One pod already placed: the one left fits on b.
    assert canary_spare_gpus(m, nodes, used, CFG, unplaced=1) is None
    # Summaries work the same as Node objects.
    summaries = [node_summary(n) for n in nodes]
    assert canary_spare_gpus(m, summaries, used, CFG, unplaced=2) == verdict


def test_over_used_nodes_count_zero_and_mig_slices_use_their_own_resource() -> None:
    m = md(gpu={"count": 1, "migProfile": "1g.10gb"}, canary=V2)
    nodes = [node("m", A100, 81920, {"nvidia.com/mig-1g.10gb": "7"})]
    used = {"m": {"nvidia.com/mig-1g.10gb": 9, "nvidia.com/gpu": 0}}
    verdict = canary_spare_gpus(m, nodes, used, CFG, unplaced=1)
    assert verdict is not None and "m 0 (room for 0)" in verdict.message
    assert canary_spare_gpus(m, nodes, {"m": {"nvidia.com/gpu": 9}}, CFG, unplaced=7) is None


def test_analysis_runs_once_per_interval() -> None:
    analysed = md(canary={**V2, "analysis": {"maxErrorRatio": 0.01, "intervalSeconds": 60}})
    at = "2026-01-01T00:00:00Z"

    def previous(last: str | None) -> dict[str, Any]:
        return {"canary": {"lastAnalysisTime": last}} if last else {}

    assert analysis_wait(analysed, None, at) == 0.0  # never checked
    assert analysis_wait(analysed, previous(at), "2026-01-01T00:00:15Z") == 45.0
    assert analysis_wait(analysed, previous(at), "2026-01-01T00:01:00Z") == 0.0
    assert analysis_wait(analysed, previous(at), "2026-01-01T00:05:00Z") == 0.0
    # Clock skew (last check in the future) or an unreadable time: due now.
    assert analysis_wait(analysed, previous("2026-01-01T00:10:00Z"), at) == 0.0
    assert analysis_wait(analysed, previous("yesterday"), at) == 0.0
    assert analysis_wait(md(canary=V2), previous(at), at) == 0.0  # no analysis
