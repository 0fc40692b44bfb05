"""The operator's lifecycle on a real cluster (kind): install, serve every runtime on CPU,
roll out an edit, repair a deleted child, garbage-collect on delete, upgrade, uninstall.

The steps run in file order and share the cluster; a step whose prerequisite failed skips
and names it. Every wait is bounded.

Not here yet: engine keda-http's hold-and-release, which needs the KEDA HTTP add-on's
interceptor running. Its place is after the ONNX prediction: helm-install kedacore/keda and
kedacore/keda-add-ons-http into kind, apply the ONNX model with engine keda-http and
minReplicas 0, wait for zero pods, send one prediction to
keda-add-ons-http-interceptor-proxy with the model's host, and expect the answer after a
pod started. tests/cluster/test_scale_from_zero.py covers everything short of the interceptor.
"""

from __future__ import annotations

from typing import Any

import pytest
from e2e_models import HALF_PLUS_TWO_INPUT, HALF_PLUS_TWO_OUTPUT, LINEAR_INPUT, LINEAR_OUTPUT
from e2elib import (
    CHART,
    NAMESPACE,
    OPERATOR_NAMESPACE,
    RELEASE,
    Env,
    close_to,
    flatten,
    http_json,
    port_forward,
    wait_for,
)

pytestmark = pytest.mark.e2e

READY_TIMEOUT = 300
# Every kind the operator may create for a ModelDeployment (resources/kinds.py), for kubectl.
CHILD_KINDS = (
    "configmaps,deployments.apps,replicasets.apps,pods,services,"
    "horizontalpodautoscalers.autoscaling,poddisruptionbudgets.policy,"
    "networkpolicies.networking.k8s.io"
)
ONNX = "linear-onnx"
DONE: set[str] = set()


def require(step: str) -> None:
    if step not in DONE:
        pytest.skip(f"needs the earlier step {step!r}, which did not pass")


def model_deployment(
    name: str, runtime: str, uri: str, model_name: str, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "kubeserve.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "runtime": runtime,
            "model": {"uri": uri, "name": model_name},
            "resources": {
                "requests": {"cpu": "100m", "memory": "256Mi"},
                "limits": {"memory": "2Gi"},
            },
            **spec,
        },
    }


def children(env: Env, name: str) -> list[str]:
    return env.kube.names(CHILD_KINDS, NAMESPACE, f"app.kubernetes.io/instance={name}")


def predict_onnx(env: Env, name: str) -> None:
    with port_forward(env.kube, f"svc/{name}", NAMESPACE, 8080) as port:
        base = f"http://127.0.0.1:{port}/v2/models/linear"
        meta = wait_for(lambda: http_json(base), timeout=60, what="ONNX model metadata")
        tensor = meta["inputs"][0]
        reply = http_json(
            f"{base}/infer",
            {
                "inputs": [
                    {
                        "name": tensor["name"],
                        "shape": [len(LINEAR_INPUT), 4],
                        "datatype": "FP32",
                        "data": flatten(LINEAR_INPUT),
                    }
                ],
            },
        )
        got = flatten(reply["outputs"][0]["data"])
        assert close_to(got, LINEAR_OUTPUT), (got, LINEAR_OUTPUT)


def delete_and_collect(env: Env, name: str) -> None:
    """Delete the ModelDeployment; every child must be garbage-collected."""
    assert children(env, name), f"{name} has no children to collect"
    env.kube.kubectl(
        "delete", "md", name, "-n", NAMESPACE, "--wait=true", "--timeout=120s", timeout=150
    )
    wait_for(
        lambda: not children(env, name) or None,
        timeout=180,
        what=f"every child of {name} to be garbage-collected",
    )


def test_operator_is_running(operator: Env) -> None:
    kube = operator.kube
    dep = kube.get("deployment", RELEASE, OPERATOR_NAMESPACE)
    assert dep is not None
    assert dep["status"].get("readyReplicas") == 1
    # The chart's pod passed the namespace's Pod Security "restricted" admission to get here.
    ns = kube.get("namespace", OPERATOR_NAMESPACE)
    assert ns and ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    DONE.add("operator")


def test_onnxruntime_serves_a_prediction(models: Env) -> None:
    require("operator")
    models.kube.apply(
        model_deployment(
            ONNX,
            "onnxruntime",
            "pvc://models/onnx",
            "linear",
            replicas=1,
            batching={"maxBatchSize": 4, "maxDelayMs": 2},
            networkPolicy={"enabled": True},
        )
    )
    md = models.kube.wait_ready(ONNX, NAMESPACE, READY_TIMEOUT)
    assert md["status"]["observedGeneration"] == md["metadata"]["generation"]
    assert md["status"]["url"].startswith(f"http://{ONNX}.{NAMESPACE}.svc.")
    predict_onnx(models, ONNX)
    DONE.add("onnx-ready")


def test_an_edit_rolls_out(models: Env) -> None:
    require("onnx-ready")
    kube = models.kube
    kube.kubectl(
        "patch",
        "md",
        ONNX,
        "-n",
        NAMESPACE,
        "--type=merge",
        "-p",
        '{"spec": {"replicas": 2, "env": [{"name": "E2E_EDIT", "value": "1"}]}}',
    )

    def rolled_out() -> dict[str, Any] | None:
        dep = kube.get("deployment", ONNX, NAMESPACE)
        if not dep:
            return None
        server = dep["spec"]["template"]["spec"]["containers"][0]
        status = dep.get("status", {})
        done = (
            {"name": "E2E_EDIT", "value": "1"} in server.get("env", [])
            and dep["spec"].get("replicas") == 2
            and status.get("observedGeneration") == dep["metadata"]["generation"]
            and status.get("updatedReplicas") == 2
            and status.get("readyReplicas") == 2
            and status.get("replicas") == 2
        )
        return dep if done else None

    wait_for(rolled_out, timeout=READY_TIMEOUT, what="the edit to roll out to 2 ready pods")

    def status_caught_up() -> dict[str, Any] | None:
        md = kube.get("md", ONNX, NAMESPACE)
        ready = kube.condition(md, "Ready")
        ok = (
            md
            and ready
            and ready["status"] == "True"
            and md["status"].get("observedGeneration") == md["metadata"]["generation"]
            and md["status"].get("readyReplicas") == 2
        )
        return md if ok else None

    wait_for(status_caught_up, timeout=120, what="the ModelDeployment status to show 2 ready")
    # Two replicas bring a PodDisruptionBudget.
    assert kube.get("poddisruptionbudget", ONNX, NAMESPACE) is not None
    predict_onnx(models, ONNX)
    DONE.add("onnx-edited")


def test_a_deleted_child_is_restored(models: Env) -> None:
    require("onnx-ready")
    kube = models.kube
    before = kube.get("deployment", ONNX, NAMESPACE)
    assert before is not None
    kube.kubectl(
        "delete", "deployment", ONNX, "-n", NAMESPACE, "--wait=true", "--timeout=120s", timeout=150
    )

    def recreated() -> dict[str, Any] | None:
        dep = kube.get("deployment", ONNX, NAMESPACE)
        if dep and dep["metadata"]["uid"] != before["metadata"]["uid"]:
            return dep
        return None

    dep = wait_for(recreated, timeout=120, what="the operator to recreate the Deployment")
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"
    kube.kubectl(
        "rollout",
        "status",
        f"deployment/{ONNX}",
        "-n",
        NAMESPACE,
        f"--timeout={READY_TIMEOUT}s",
        timeout=READY_TIMEOUT + 30,
    )
    kube.wait_ready(ONNX, NAMESPACE, READY_TIMEOUT)
    predict_onnx(models, ONNX)
    DONE.add("onnx-restored")


def test_deleting_the_model_deployment_collects_every_child(models: Env) -> None:
    require("onnx-ready")
    found = children(models, ONNX)
    kinds = {name.split("/")[0] for name in found}
    assert {"deployment.apps", "service", "networkpolicy.networking.k8s.io"} <= kinds, found
    delete_and_collect(models, ONNX)


def test_torchserve_serves_a_prediction(models: Env) -> None:
    require("operator")
    name = "linear-torch"
    models.kube.apply(
        model_deployment(
            name,
            "torchserve",
            "pvc://models/torch",
            "linear",
            autoscaling={
                "minReplicas": 1,
                "maxReplicas": 2,
                "metrics": [{"type": "cpu", "target": 80}],
            },
        )
    )
    models.kube.wait_ready(name, NAMESPACE, READY_TIMEOUT)
    assert models.kube.get("horizontalpodautoscaler", name, NAMESPACE) is not None
    # TorchServe's config.properties comes from a ConfigMap child.
    assert any(c.startswith("configmap/") for c in children(models, name))
    with port_forward(models.kube, f"svc/{name}", NAMESPACE, 8080) as port:
        url = f"http://127.0.0.1:{port}/predictions/linear"
        reply = wait_for(
            lambda: http_json(url, {"data": LINEAR_INPUT}),
            timeout=60,
            what="a TorchServe prediction",
        )
        got = flatten(reply["data"])
        assert close_to(got, LINEAR_OUTPUT), (got, LINEAR_OUTPUT)
    delete_and_collect(models, name)


def test_tfserving_serves_a_prediction(models: Env) -> None:
    require("operator")
    name = "half-plus-two"
    models.kube.apply(
        model_deployment(
            name,
            "tfserving",
            "pvc://models/tf/half_plus_two",
            "half_plus_two",
            replicas=1,
        )
    )
    models.kube.wait_ready(name, NAMESPACE, READY_TIMEOUT)
    with port_forward(models.kube, f"svc/{name}", NAMESPACE, 8080) as port:
        url = f"http://127.0.0.1:{port}/v1/models/half_plus_two:predict"
        reply = wait_for(
            lambda: http_json(url, {"instances": HALF_PLUS_TWO_INPUT}),
            timeout=60,
            what="a TF Serving prediction",
        )
        got = flatten(reply["predictions"])
        assert close_to(got, HALF_PLUS_TWO_OUTPUT), (got, HALF_PLUS_TWO_OUTPUT)
    delete_and_collect(models, name)


def test_helm_upgrade_keeps_reconciling(models: Env) -> None:
    require("operator")
    kube = models.kube
    before = kube.get("deployment", RELEASE, OPERATOR_NAMESPACE)
    assert before is not None
    # CRDs first: Helm never upgrades crds/ (docs/install.md).
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
    kube.helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--reuse-values",
        "--set",
        "operator.logLevel=DEBUG",
        "--wait",
        "--timeout",
        "5m",
    )
    kube.kubectl(
        "rollout",
        "status",
        f"deployment/{RELEASE}",
        "-n",
        OPERATOR_NAMESPACE,
        "--timeout=180s",
        timeout=210,
    )
    after = kube.get("deployment", RELEASE, OPERATOR_NAMESPACE)
    assert after is not None
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    assert "--log-level=DEBUG" in after["spec"]["template"]["spec"]["containers"][0]["args"]
    # The upgraded operator still reconciles.
    name = "after-upgrade"
    kube.apply(model_deployment(name, "onnxruntime", "pvc://models/onnx", "linear"))
    kube.wait_ready(name, NAMESPACE, READY_TIMEOUT)
    predict_onnx(models, name)
    delete_and_collect(models, name)
    DONE.add("upgraded")


def test_helm_uninstall_removes_the_operator(models: Env) -> None:
    require("operator")
    kube = models.kube
    kube.helm("uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--wait", "--timeout", "5m")
    wait_for(
        lambda: kube.get("deployment", RELEASE, OPERATOR_NAMESPACE) is None or None,
        timeout=120,
        what="the operator Deployment to go",
    )
    assert kube.get("clusterrole", RELEASE) is None
    assert kube.get("clusterrolebinding", f"{RELEASE}-nodes") is None
    # Helm leaves CRDs from crds/ in place (removing one deletes every ModelDeployment).
    assert kube.get("crd", "modeldeployments.kubeserve.io") is not None
