"""What reaches the pods, on the real control plane: the operator's pod template, rolled out
by the real Deployment and ReplicaSet controllers onto simulated nodes.

A model server reads its config files only at start, so a change that lands only in the
ConfigMap must still replace the pods; the Deployment controller replaces pods only when
the pod template changes (a new ``pod-template-hash``, a new ReplicaSet).
"""

from __future__ import annotations

from typing import Any

import pytest
from cluster_env import model_deployment
from e2elib import Kube as Tools
from kubeapi import Kube, condition, eventually

pytestmark = pytest.mark.usefixtures("operator", "scheduler")
MD = "kubeserve.io/v1alpha1"
READY_SECONDS = 60
TEMPLATE_HASH = "pod-template-hash"


def ready(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = kube.get(MD, "modeldeployments", namespace, name)
        cond = condition(obj, "Ready")
        if not cond or cond["status"] != "True":
            return None
        current = obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
        return obj if current else None

    result: dict[str, Any] = eventually(check, timeout=READY_SECONDS, what=f"md/{name} Ready")
    return result


def pods(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/instance={name}"
    return kube.list("v1", "pods", namespace, labelSelector=selector)


def torchserve(name: str, namespace: str, batching: dict[str, Any]) -> dict[str, Any]:
    # s3:// keeps the model on the storage initializer's side: no PersistentVolumeClaim needed.
    return model_deployment(
        name,
        namespace,
        runtime="torchserve",
        model={"uri": "s3://models/resnet/"},
        replicas=2,
        batching=batching,
    )


def test_a_batching_change_alone_replaces_the_pods(
    kube: Kube, tools: Tools, namespace: str
) -> None:
    name = "batched"
    tools.apply(torchserve(name, namespace, {"maxBatchSize": 4, "maxDelayMs": 10}))
    ready(kube, namespace, name)
    before = pods(kube, namespace, name)
    assert len(before) == 2
    old_hashes = {p["metadata"]["labels"][TEMPLATE_HASH] for p in before}
    old_uids = {p["metadata"]["uid"] for p in before}
    (old_hash,) = old_hashes

    # Only spec.batching changes: TorchServe's config.properties, nothing in the args.
    tools.apply(torchserve(name, namespace, {"maxBatchSize": 8, "maxDelayMs": 10}))

    def config_applied() -> bool:
        config = kube.get("v1", "configmaps", namespace, name)
        return bool(config and '"batchSize": 8' in config["data"]["config.properties"])

    eventually(config_applied, timeout=30, what="the new config.properties in the ConfigMap")

    def replaced() -> list[dict[str, Any]] | None:
        deploy = kube.get("apps/v1", "deployments", namespace, name)
        status = deploy.get("status") or {}
        now = pods(kube, namespace, name)
        done = (
            status.get("observedGeneration") == deploy["metadata"]["generation"]
            and status.get("updatedReplicas") == 2
            and status.get("readyReplicas") == 2
            and len(now) == 2
            and all(p["metadata"]["labels"][TEMPLATE_HASH] != old_hash for p in now)
        )
        return now if done else None

    after = eventually(replaced, timeout=READY_SECONDS, what="pods of a new pod template")
    assert not old_uids & {p["metadata"]["uid"] for p in after}
    replica_sets = kube.list("apps/v1", "replicasets", namespace)
    current = [rs for rs in replica_sets if rs["spec"].get("replicas")]
    assert [rs["metadata"]["labels"][TEMPLATE_HASH] for rs in current] != [old_hash]
    assert len(replica_sets) == 2  # the old ReplicaSet, scaled to 0, and the new one
    ready(kube, namespace, name)


@pytest.mark.parametrize("runtime", ["onnxruntime", "torchserve"])
def test_the_api_server_keeps_the_pre_stop_sleep(
    runtime: str, kube: Kube, tools: Tools, namespace: str
) -> None:
    # The kubelet's sleep action (PodLifecycleSleepAction, on by default since 1.30): an API
    # server without it would drop the field or refuse the Deployment.
    name = f"drain-{runtime}"
    tools.apply(model_deployment(name, namespace, runtime=runtime, replicas=2))
    ready(kube, namespace, name)
    deploy = kube.get("apps/v1", "deployments", namespace, name)
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    running = pods(kube, namespace, name)
    assert len(running) == 2
    for pod in running:
        (server,) = pod["spec"]["containers"]
        assert server["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
        assert pod["spec"]["terminationGracePeriodSeconds"] > 5
