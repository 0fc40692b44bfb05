"""Defects a review found and the real control plane confirmed (issue 17), one test each.

Each test fails on the code before its fix; docs/reliability.md lists them.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
import yaml
from cluster_env import Operator, md, model_deployment, ready_at_generation
from e2elib import Kube as Tools
from envtest import ControlPlane
from kubeapi import Kube, condition, eventually

pytestmark = pytest.mark.usefixtures("scheduler")


def deployment(kube: Kube, namespace: str, name: str) -> Any:
    return kube.get("apps/v1", "deployments", namespace, name)


@pytest.mark.usefixtures("session_operator_paused")
def test_a_model_deployment_deleted_during_a_watch_gap_stays_deleted(
    kube: Kube,
    tools: Tools,
    namespace: str,
    control_plane: ControlPlane,
    operator: Operator,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Defect 1: kopf lists again after 410 Gone without a DELETED; its index keeps a ghost."""
    running = Operator(operator.kubeconfig, tmp_path_factory.mktemp("ghost"),
                       env={"KUBESERVE_RESYNC_SECONDS": "3"})  # fmt: skip
    running.start()
    try:
        tools.apply(model_deployment("ghost", namespace))
        ready_at_generation(kube, namespace, "ghost")
        assert running.popen is not None
        os.killpg(running.popen.pid, signal.SIGSTOP)  # a frozen operator sees no event
        control_plane.restart_apiserver()  # a new watch cache: old resourceVersions are Gone
        tools.kubectl("delete", "md", "ghost", "-n", namespace, "--timeout=30s")
        eventually(lambda: deployment(kube, namespace, "ghost") is None, timeout=60,
                   what="the garbage collector took the children")  # fmt: skip
        os.killpg(running.popen.pid, signal.SIGCONT)
        # Five resync periods: before the fix each re-created the Deployment for a dead owner.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert deployment(kube, namespace, "ghost") is None, "a ghost re-created it"
            time.sleep(0.5)
        # Before the fix each attempt failed with a 404 and was retried with backoff.
        failures = [line for line in running.log_text().splitlines() if "failed (HTTP 404" in line]
        assert not failures, failures[:3]
    finally:
        if running.popen is not None and running.popen.poll() is None:
            os.killpg(running.popen.pid, signal.SIGCONT)
        running.stop()


@pytest.mark.usefixtures("operator")
def test_changing_the_runtime_is_refused_and_the_model_keeps_serving(
    kube: Kube, tools: Tools, namespace: str
) -> None:
    """Defect 2: the runtime is in the Deployment's immutable selector."""
    tools.apply(model_deployment("fixed", namespace))
    ready_at_generation(kube, namespace, "fixed")
    selector = kube.get("v1", "services", namespace, "fixed")["spec"]["selector"]
    changed = model_deployment("fixed", namespace)
    changed["spec"]["runtime"] = "torchserve"
    result = tools.kubectl("apply", "-f", "-", input=yaml.safe_dump(changed), check=False)
    assert result.returncode != 0 and "runtime is immutable" in result.stderr, result.stderr
    assert kube.get("v1", "services", namespace, "fixed")["spec"]["selector"] == selector
    assert (condition(md(kube, namespace, "fixed"), "Ready") or {}).get("status") == "True"


@pytest.mark.usefixtures("operator")
def test_delete_and_recreate_with_the_same_name_converges_without_a_resync(
    kube: Kube, tools: Tools, namespace: str
) -> None:
    """Defect 3: the old children's deletion events were dropped (another owner uid)."""
    tools.apply(model_deployment("again", namespace))
    first = ready_at_generation(kube, namespace, "again")
    # A finalizer (a load balancer controller's, say) keeps the old Service a while.
    hold = {"metadata": {"finalizers": ["test.kubeserve.io/hold"]}}
    kube.patch("v1", "services", namespace, "again", hold)
    tools.kubectl("delete", "md", "again", "-n", namespace, "--timeout=30s")
    tools.apply(model_deployment("again", namespace))

    def waiting() -> dict[str, Any] | None:
        cond = condition(md(kube, namespace, "again"), "Ready")
        return cond if cond and cond["reason"] == "PredecessorBeingDeleted" else None

    assert "garbage collector" in eventually(waiting, timeout=60, what="the wait")["message"]
    kube.patch("v1", "services", namespace, "again", {"metadata": {"finalizers": None}})
    # The default resync is 300 s: well within it, the new one owns fresh children.
    second = ready_at_generation(kube, namespace, "again", timeout=30)
    assert second["metadata"]["uid"] != first["metadata"]["uid"]
    service = kube.get("v1", "services", namespace, "again")
    assert service["metadata"]["ownerReferences"][0]["uid"] == second["metadata"]["uid"]


@pytest.mark.usefixtures("operator")
def test_turning_on_autoscaling_keeps_the_replica_count(
    kube: Kube, tools: Tools, namespace: str
) -> None:
    """Defect 4: dropping spec.replicas from our apply reset the Deployment to 1."""
    tools.apply(model_deployment("scaled", namespace, replicas=4))
    ready_at_generation(kube, namespace, "scaled")
    autoscaling = {"minReplicas": 2, "maxReplicas": 8, "metrics": [{"type": "cpu", "target": 70}]}
    tools.apply(model_deployment("scaled", namespace, autoscaling=autoscaling))
    eventually(
        lambda: kube.get("autoscaling/v2", "horizontalpodautoscalers", namespace, "scaled"),
        timeout=30, what="the HPA",
    )  # fmt: skip
    seen = set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen.add(deployment(kube, namespace, "scaled")["spec"]["replicas"])
        time.sleep(0.2)
    assert seen == {4}, f"replica counts seen after the switch: {sorted(seen)}"
    fields = deployment(kube, namespace, "scaled")["metadata"]["managedFields"]
    assert not any(
        e["manager"] == "kubeserve" and "f:replicas" in e.get("fieldsV1", {}).get("f:spec", {})
        for e in fields
    ), "the operator must no longer own spec.replicas"


@pytest.mark.usefixtures("operator")
def test_a_broken_new_generation_is_not_ready_while_old_pods_serve(
    kube: Kube, tools: Tools, namespace: str
) -> None:
    """Defect 5: Ready counted the old ReplicaSet's ready pods."""
    tools.apply(model_deployment("broken", namespace, replicas=2))
    ready_at_generation(kube, namespace, "broken")
    tools.apply(model_deployment("broken", namespace, replicas=2,
                                 image="kubeserve/onnxruntime:never-ready"))  # fmt: skip

    def judged() -> dict[str, Any] | None:
        obj = md(kube, namespace, "broken")
        deploy = deployment(kube, namespace, "broken")
        return (
            obj
            if obj["status"].get("observedGeneration") == 2
            and deploy["status"].get("updatedReplicas")
            else None
        )

    obj = eventually(judged, timeout=30, what="generation 2 rolled out in part")
    ready = condition(obj, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "RolloutInProgress", ready
    assert obj["status"]["readyReplicas"] >= 2  # the old pods do serve
    result = tools.kubectl("wait", "--for=condition=Ready", "md/broken", "-n", namespace,
                           "--timeout=5s", check=False)  # fmt: skip
    assert result.returncode != 0


@pytest.mark.usefixtures("operator")
def test_switching_from_keda_at_zero_to_an_hpa_brings_the_model_back(
    kube: Kube, tools: Tools, namespace: str, third_party_crds: Any
) -> None:
    """Defect 10: an HPA does nothing at 0 replicas, which KEDA's manager still owned."""
    keda = {"engine": "keda", "minReplicas": 0, "maxReplicas": 3, "metrics": [
        {"type": "requestsPerSecond", "target": 10, "query": "sum(rate(x[1m]))"}]}  # fmt: skip
    tools.apply(model_deployment("woken", namespace, autoscaling=keda))
    eventually(lambda: kube.get("keda.sh/v1alpha1", "scaledobjects", namespace, "woken"),
               timeout=30, what="the ScaledObject")  # fmt: skip
    # What KEDA does when idle (KEDA itself does not run here).
    kube.patch("apps/v1", "deployments", namespace, "woken", {"spec": {"replicas": 0}},
               subresource="scale")  # fmt: skip
    hpa = {"engine": "hpa", "minReplicas": 1, "maxReplicas": 3,
           "metrics": [{"type": "cpu", "target": 70}]}  # fmt: skip
    tools.apply(model_deployment("woken", namespace, autoscaling=hpa))
    eventually(lambda: deployment(kube, namespace, "woken")["spec"]["replicas"] >= 1,
               timeout=30, what="replicas back to minReplicas")  # fmt: skip
    # The HPA's own status (ScalingActive False without a metrics API) reaches the status.
    eventually(
        lambda: (condition(md(kube, namespace, "woken"), "AutoscalerReady") or {}).get("status")
        in ("True", "False"),
        timeout=60, what="AutoscalerReady decided by the HPA's status",
    )  # fmt: skip
