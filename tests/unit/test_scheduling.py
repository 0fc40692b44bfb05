"""scheduling.schedulable: could any node ever run a replica? Tables of Node fixtures."""

from __future__ import annotations

from typing import Any

import pytest

from kubeserve.api import ModelDeployment
from kubeserve.config import OperatorConfig
from kubeserve.scheduling import NodeSummary, Taint, node_summary, schedulable

CFG = OperatorConfig()
A100 = "NVIDIA-A100-SXM4-80GB"
L4 = "NVIDIA-L4"


def node(
    name: str,
    product: str | None = None,
    memory: int | None = None,
    devices: dict[str, Any] | None = None,
    taints: list[dict[str, str]] | None = None,
    cordoned: bool = False,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Node as the API returns it (only the fields that matter, plus some that do not)."""
    all_labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", **(labels or {})}
    if product:
        all_labels["nvidia.com/gpu.product"] = product
        all_labels["nvidia.com/gpu.present"] = "true"
    if memory is not None:
        all_labels["nvidia.com/gpu.memory"] = str(memory)
    spec: dict[str, Any] = {"podCIDR": "10.0.0.0/24"}
    if taints:
        spec["taints"] = taints
    if cordoned:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": all_labels, "uid": f"uid-{name}"},
        "spec": spec,
        "status": {
            "allocatable": {"cpu": "31850m", "memory": "250Gi", "pods": "110", **(devices or {})},
            "capacity": {"cpu": "32", "memory": "256Gi"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def a100(name: str, **kw: Any) -> dict[str, Any]:
    return node(name, A100, 81920, {"nvidia.com/gpu": "8"}, **kw)


def l4(name: str, **kw: Any) -> dict[str, Any]:
    return node(name, L4, 23034, {"nvidia.com/gpu": "1"}, **kw)


def cpu_node(name: str, **kw: Any) -> dict[str, Any]:
    return node(name, **kw)


GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
DEDICATED = {"key": "dedicated", "value": "training", "effect": "NoSchedule"}


def md(**spec: Any) -> ModelDeployment:
    return ModelDeployment.parse(
        {
            "apiVersion": "kubeserve.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "resnet", "namespace": "ml"},
            "spec": {"runtime": "onnxruntime", "model": {"uri": "s3://models/m"}, **spec},
        }
    )


# name -> (spec, nodes, status, reason, fragments the message must contain)
CASES: dict[str, tuple[dict[str, Any], list[dict[str, Any]], str, str, list[str]]] = {
    "no-gpu": ({}, [cpu_node("c1")], "True", "NoGPURequested", []),
    "a100-on-l4s": (
        {"gpu": {"product": [A100]}},
        [l4("l4-1"), l4("l4-2"), cpu_node("c1")],
        "False",
        "NoMatchingNodes",
        [
            f"requested 1x nvidia.com/gpu ({A100})",
            f"nodes offer: 2x {L4} (23034 MiB, 1 nvidia.com/gpu each)",
        ],
    ),
    "a100-present": (
        {"gpu": {"product": [A100]}},
        [l4("l4-1"), a100("a100-1"), cpu_node("c1")],
        "True",
        "NodesMatch",
        [f"1 node can run a replica: 1x {A100} (81920 MiB, 8 nvidia.com/gpu)"],
    ),
    "any-of-the-products": (
        {"gpu": {"product": ["NVIDIA-H100-80GB-HBM3", L4]}},
        [l4("l4-1"), l4("l4-2"), a100("a100-1")],
        "True",
        "NodesMatch",
        [f"2 nodes can run a replica: 2x {L4} (23034 MiB, 1 nvidia.com/gpu each)"],
    ),
    "a100-cordoned": (
        {"gpu": {"product": [A100]}},
        [a100("a100-1", cordoned=True), l4("l4-1")],
        "False",
        "NoMatchingNodes",
        [f"nodes offer: 1x {L4}", "not counted: 1 cordoned"],
    ),
    "gpu-taint-is-tolerated-automatically": (
        {"gpu": {"count": 1}},
        [l4("l4-1", taints=[GPU_TAINT])],
        "True",
        "NodesMatch",
        [],
    ),
    "other-taint-not-tolerated": (
        {"gpu": {"count": 1}},
        [a100("a100-1", taints=[GPU_TAINT, DEDICATED])],
        "False",
        "NoMatchingNodes",
        [
            "every node with nvidia.com/gpu is set aside",
            "1 with a taint the pod does not tolerate (dedicated=training:NoSchedule)",
        ],
    ),
    "other-taint-tolerated-by-the-user": (
        {
            "gpu": {"count": 1},
            "tolerations": [
                {
                    "key": "dedicated",
                    "operator": "Equal",
                    "value": "training",
                    "effect": "NoSchedule",
                }
            ],
        },
        [a100("a100-1", taints=[GPU_TAINT, DEDICATED])],
        "True",
        "NodesMatch",
        [],
    ),
    "toleration-for-another-value-does-not-count": (
        {
            "gpu": {"count": 1},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "inference"}],
        },
        [a100("a100-1", taints=[DEDICATED])],
        "False",
        "NoMatchingNodes",
        [],
    ),
    "prefer-no-schedule-does-not-block": (
        {"gpu": {"count": 1}},
        [a100("a100-1", taints=[{"key": "spot", "value": "true", "effect": "PreferNoSchedule"}])],
        "True",
        "NodesMatch",
        [],
    ),
    "not-ready-node-may-recover": (
        {"gpu": {"count": 1}},
        [a100("a100-1", taints=[{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}])],
        "True",
        "NodesMatch",
        [],
    ),
    "too-few-devices-per-node": (
        {"gpu": {"count": 4}},
        [l4("l4-1"), node("l4x2", L4, 23034, {"nvidia.com/gpu": "2"})],
        "False",
        "NoMatchingNodes",
        [
            "requested 4x nvidia.com/gpu",
            f"1x {L4} (23034 MiB, 1 nvidia.com/gpu)",
            f"1x {L4} (23034 MiB, 2 nvidia.com/gpu)",
        ],
    ),
    "enough-devices-on-one-node": (
        {"gpu": {"count": 8}},
        [l4("l4-1"), a100("a100-1")],
        "True",
        "NodesMatch",
        [],
    ),
    "memory-enough": (
        {"gpu": {"minMemoryMiB": 40000}},
        [l4("l4-1"), a100("a100-1")],
        "True",
        "NodesMatch",
        [A100],
    ),
    "memory-exactly": (
        {"gpu": {"minMemoryMiB": 81920}},
        [a100("a100-1")],
        "True",
        "NodesMatch",
        [],
    ),
    "memory-too-small": (
        {"gpu": {"minMemoryMiB": 40000}},
        [l4("l4-1"), l4("l4-2")],
        "False",
        "NoMatchingNodes",
        ["(at least 40000 MiB)", f"2x {L4} (23034 MiB"],
    ),
    "memory-label-missing": (
        {"gpu": {"minMemoryMiB": 1000}},
        [node("bare", devices={"nvidia.com/gpu": "1"})],
        "False",
        "NoMatchingNodes",
        ["1x GPU without a product label (1 nvidia.com/gpu)"],
    ),
    "no-gpu-nodes-at-all": (
        {"gpu": {"count": 1}},
        [cpu_node("c1"), cpu_node("c2")],
        "False",
        "NoMatchingNodes",
        ["no node advertises nvidia.com/gpu (is the GPU Operator or device plugin running?)"],
    ),
    "gpu-nodes-labelled-but-no-device-plugin": (
        {"gpu": {"count": 1}},
        [node("gpu-1", A100, 81920, {})],
        "False",
        "NoMatchingNodes",
        ["no node advertises nvidia.com/gpu"],
    ),
    "device-count-zero": (
        {"gpu": {"count": 1}},
        [node("gpu-1", A100, 81920, {"nvidia.com/gpu": "0"})],
        "False",
        "NoMatchingNodes",
        [],
    ),
    "mig-profile-offered": (
        {"gpu": {"migProfile": "1g.10gb"}},
        [
            node("mig-1", A100, 81920, {"nvidia.com/gpu": "0", "nvidia.com/mig-1g.10gb": "7"}),
            l4("l4-1"),
        ],
        "True",
        "NodesMatch",
        [f"1x {A100} (81920 MiB, 7 nvidia.com/mig-1g.10gb)"],
    ),
    "mig-other-profile-only": (
        {"gpu": {"migProfile": "1g.10gb"}},
        [node("mig-1", A100, 81920, {"nvidia.com/mig-3g.40gb": "2"}), l4("l4-1")],
        "False",
        "NoMatchingNodes",
        [
            "requested 1x nvidia.com/mig-1g.10gb",
            "no node advertises nvidia.com/mig-1g.10gb (is the NVIDIA device plugin running "
            "with the mixed MIG strategy and this profile?)",
            "2 nvidia.com/mig-3g.40gb",
            "1 nvidia.com/gpu",
        ],
    ),
    "mig-media-profile": (
        {"gpu": {"migProfile": "1g.10gb+me"}},
        [node("mig-1", A100, 81920, {"nvidia.com/mig-1g.10gb.me": "1"})],
        "True",
        "NodesMatch",
        [],
    ),
    "amd": (
        {"gpu": {"resourceName": "amd.com/gpu", "count": 2}},
        [
            node(
                "mi300",
                devices={"amd.com/gpu": "8"},
                taints=[{"key": "amd.com/gpu", "effect": "NoSchedule"}],
            ),
            l4("l4-1"),
        ],
        "True",
        "NodesMatch",
        ["1 node can run a replica: 1x GPU without a product label (8 amd.com/gpu)"],
    ),
    "node-selector-must-match": (
        {"gpu": {"count": 1}, "nodeSelector": {"pool": "inference"}},
        [a100("a100-1", labels={"pool": "training"}), a100("a100-2")],
        "False",
        "NoMatchingNodes",
        [
            "every node with nvidia.com/gpu is set aside",
            "not counted: 2 outside your nodeSelector/affinity",
        ],
    ),
    "node-selector-matches": (
        {"gpu": {"count": 1}, "nodeSelector": {"pool": "inference"}},
        [a100("a100-1", labels={"pool": "inference"}), l4("l4-1")],
        "True",
        "NodesMatch",
        ["1 node can run a replica"],
    ),
    "user-affinity-must-match": (
        {
            "gpu": {"count": 1},
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "topology.kubernetes.io/zone",
                                        "operator": "In",
                                        "values": ["b"],
                                    }
                                ]
                            }
                        ]
                    }
                }
            },
        },
        [a100("a100-1", labels={"topology.kubernetes.io/zone": "a"})],
        "False",
        "NoMatchingNodes",
        ["1 outside your nodeSelector/affinity"],
    ),
    "user-affinity-terms-are-ored": (
        {
            "gpu": {"count": 1},
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {
                                        "key": "topology.kubernetes.io/zone",
                                        "operator": "In",
                                        "values": ["b"],
                                    }
                                ]
                            },
                            {
                                "matchFields": [
                                    {"key": "metadata.name", "operator": "In", "values": ["a100-1"]}
                                ]
                            },
                        ]
                    }
                }
            },
        },
        [a100("a100-1", labels={"topology.kubernetes.io/zone": "a"})],
        "True",
        "NodesMatch",
        [],
    ),
    "user-affinity-not-in-and-does-not-exist": (
        {
            "gpu": {"count": 1},
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "spot", "operator": "DoesNotExist"},
                                    {
                                        "key": "topology.kubernetes.io/zone",
                                        "operator": "NotIn",
                                        "values": ["c"],
                                    },
                                    {"key": "generation", "operator": "Lt", "values": ["5"]},
                                ]
                            }
                        ]
                    }
                }
            },
        },
        [
            a100("spot-1", labels={"spot": "true", "generation": "3"}),
            a100("zone-c", labels={"topology.kubernetes.io/zone": "c", "generation": "3"}),
            a100("new", labels={"generation": "7"}),
            a100("good", labels={"generation": "4"}),
        ],
        "True",
        "NodesMatch",
        ["1 node can run a replica"],
    ),
    "everything-excluded": (
        {"gpu": {"product": [A100]}},
        [
            a100("c", cordoned=True),
            a100("t", taints=[DEDICATED]),
            cpu_node("c1"),
            # CPU nodes set aside are not worth a mention.
            cpu_node("c2", cordoned=True),
            cpu_node("c3", taints=[{"key": "infra", "effect": "NoSchedule"}]),
        ],
        "False",
        "NoMatchingNodes",
        [
            "not counted: 1 cordoned, 1 with a taint the pod does not tolerate "
            "(dedicated=training:NoSchedule)"
        ],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_schedulable(case: str) -> None:
    spec, nodes, status, reason, fragments = CASES[case]
    verdict = schedulable(md(**spec), nodes, CFG)
    assert (verdict.status, verdict.reason) == (status, reason), verdict.message
    for fragment in fragments:
        assert fragment in verdict.message, verdict.message


@pytest.mark.parametrize("case", sorted(CASES))
def test_summaries_give_the_same_verdict_as_whole_nodes(case: str) -> None:
    spec, nodes, *_ = CASES[case]
    model = md(**spec)
    assert schedulable(model, [node_summary(n) for n in nodes], CFG) == schedulable(
        model, nodes, CFG
    )


def test_unknown_without_nodes() -> None:
    model = md(gpu={"count": 1})
    forbidden = schedulable(model, None, CFG)
    assert (forbidden.status, forbidden.reason) == ("Unknown", "NodesForbidden")
    assert "kubeserve-nodes" in forbidden.message
    assert schedulable(model, [], CFG).reason == "NodesUnknown"


def test_no_gpu_needs_no_nodes() -> None:
    assert schedulable(md(), None, CFG).status == "True"


def test_label_keys_come_from_the_config() -> None:
    cfg = OperatorConfig(gpu_product_label="cloud.example/accelerator")
    nodes = [
        node(
            "x", devices={"nvidia.com/gpu": "1"}, labels={"cloud.example/accelerator": "nvidia-l4"}
        )
    ]
    assert schedulable(md(gpu={"product": ["nvidia-l4"]}), nodes, cfg).status == "True"
    assert schedulable(md(gpu={"product": ["nvidia-l4"]}), nodes, CFG).status == "False"


def test_many_kinds_of_nodes_are_summarised() -> None:
    nodes = [node(f"n{i}", f"GPU-{i}", 1000 * i, {"nvidia.com/gpu": "1"}) for i in range(1, 9)]
    verdict = schedulable(md(gpu={"product": ["NVIDIA-B200"]}), nodes, CFG)
    assert verdict.status == "False"
    assert verdict.message.endswith("and 3 more")


def test_node_summary_keeps_what_scheduling_reads() -> None:
    summary = node_summary(a100("a100-1", taints=[GPU_TAINT], cordoned=True))
    assert summary == NodeSummary(
        name="a100-1",
        labels={
            "kubernetes.io/hostname": "a100-1",
            "kubernetes.io/os": "linux",
            "nvidia.com/gpu.product": A100,
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.memory": "81920",
        },
        devices={"nvidia.com/gpu": 8},
        taints=(Taint("nvidia.com/gpu", "present", "NoSchedule"),),
        unschedulable=True,
    )


def test_node_summary_of_a_sparse_node() -> None:
    assert node_summary({"metadata": {"name": "n"}}) == NodeSummary(name="n")
    weird = {"metadata": {"name": "n"}, "status": {"allocatable": {"example.com/dev": "lots"}}}
    assert node_summary(weird).devices == {"example.com/dev": 0}
