"""GPU scheduling, proven by the real scheduler on simulated GPU nodes.

Each test registers nodes with a GPU product no other test names, so what the scheduler
can choose from is known exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cluster_env import md, model_deployment, ready_at_generation
from e2elib import Kube as Tools
from kubeapi import Kube, condition, eventually
from nodesim import NodeSimulator, SimNode, gpu_node

pytestmark = pytest.mark.usefixtures("operator", "scheduler")


@pytest.fixture
def added_nodes(nodes: NodeSimulator) -> Iterator[list[SimNode]]:
    """Nodes a test adds for itself, removed afterwards."""
    added: list[SimNode] = []
    yield added
    for node in added:
        nodes.remove(node.name)


def add(nodes: NodeSimulator, added: list[SimNode], node: SimNode) -> None:
    nodes.add(node)
    added.append(node)


def pods(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    return kube.list("v1", "pods", namespace, labelSelector=f"app.kubernetes.io/instance={name}")


def test_a_gpu_product_lands_only_on_a_matching_node(
    kube: Kube, tools: Tools, namespace: str, nodes: NodeSimulator, added_nodes: list[SimNode]
) -> None:
    add(nodes, added_nodes, gpu_node("sim-h100", "NVIDIA-H100-SIM", count=2))
    add(nodes, added_nodes, gpu_node("sim-t4", "NVIDIA-T4-SIM", count=8))
    gpu = {"count": 1, "product": ["NVIDIA-H100-SIM"]}
    tools.apply(model_deployment("h100", namespace, replicas=2, gpu=gpu))
    ready_at_generation(kube, namespace, "h100")
    placed = {p["spec"]["nodeName"] for p in pods(kube, namespace, "h100")}
    assert placed == {"sim-h100"}
    limits = pods(kube, namespace, "h100")[0]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"


def test_no_matching_node_names_what_the_nodes_offer_then_a_new_node_fixes_it(
    kube: Kube, tools: Tools, namespace: str, nodes: NodeSimulator, added_nodes: list[SimNode]
) -> None:
    gpu = {"count": 1, "product": ["NVIDIA-B200-SIM"]}
    tools.apply(model_deployment("b200", namespace, gpu=gpu))

    def unschedulable() -> dict[str, Any] | None:
        cond = condition(md(kube, namespace, "b200"), "Schedulable")
        return cond if cond and cond["status"] == "False" else None

    cond = eventually(unschedulable, timeout=30, what="Schedulable=False")
    assert "NVIDIA-B200-SIM" in cond["message"] and "NVIDIA-L4" in cond["message"]
    # The real scheduler agrees: the pod stays Pending.
    (pod,) = pods(kube, namespace, "b200")
    assert not pod["spec"].get("nodeName")
    # A node with that GPU joins: the Node watch re-evaluates, and the pod is placed.
    add(nodes, added_nodes, gpu_node("sim-b200", "NVIDIA-B200-SIM"))
    obj = ready_at_generation(kube, namespace, "b200")
    assert condition(obj, "Schedulable")["status"] == "True"
    assert {p["spec"]["nodeName"] for p in pods(kube, namespace, "b200")} == {"sim-b200"}


def test_changing_the_model_with_every_gpu_busy_rolls_out_without_a_deadlock(
    kube: Kube, tools: Tools, namespace: str, nodes: NodeSimulator, added_nodes: list[SimNode]
) -> None:
    # Two replicas on exactly two GPUs: a surge pod would need a third and wait for ever.
    add(nodes, added_nodes, gpu_node("sim-busy", "NVIDIA-BUSY-SIM", count=2))
    gpu = {"count": 1, "product": ["NVIDIA-BUSY-SIM"]}
    tools.apply(model_deployment("busy", namespace, replicas=2, gpu=gpu))
    before = ready_at_generation(kube, namespace, "busy")
    old_pods = {p["metadata"]["uid"] for p in pods(kube, namespace, "busy")}
    changed = model_deployment("busy", namespace, replicas=2, gpu=gpu)
    changed["spec"]["model"]["uri"] = "s3://models/mnist-v2/"
    tools.apply(changed)

    def rolled() -> bool:
        current = pods(kube, namespace, "busy")
        uids = {p["metadata"]["uid"] for p in current}
        return len(current) == 2 and not uids & old_pods

    eventually(rolled, timeout=60, what="both pods replaced")
    after = ready_at_generation(kube, namespace, "busy")
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1
    deploy = kube.get("apps/v1", "deployments", namespace, "busy")
    assert deploy["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


def test_a_mig_profile_lands_on_a_node_with_that_mig_resource(
    kube: Kube, tools: Tools, namespace: str, nodes: NodeSimulator, added_nodes: list[SimNode]
) -> None:
    add(nodes, added_nodes, gpu_node("sim-mig", "NVIDIA-A30-SIM", memory_mib=24576,
                                     mig={"2g.12gb": 2}))  # fmt: skip
    tools.apply(model_deployment("mig", namespace, replicas=2, gpu={"migProfile": "2g.12gb"}))
    ready_at_generation(kube, namespace, "mig")
    placed = pods(kube, namespace, "mig")
    assert {p["spec"]["nodeName"] for p in placed} == {"sim-mig"}
    assert (
        placed[0]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/mig-2g.12gb"] == "1"
    )
