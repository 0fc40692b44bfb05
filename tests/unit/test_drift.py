"""drift.py: a child has drifted exactly when a field of our apply body is missing or changed."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from kubeserve.api import ModelDeployment
from kubeserve.config import OperatorConfig
from kubeserve.drift import drifted, quantity
from kubeserve.render import render

MD = {
    "apiVersion": "kubeserve.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "mnist", "namespace": "ml", "uid": "u-1"},
    "spec": {
        "runtime": "onnxruntime",
        "model": {"uri": "s3://models/mnist/"},
        "replicas": 2,
        "resources": {"requests": {"cpu": "0.5", "memory": "1Gi"}, "limits": {"cpu": 2}},
        "env": [{"name": "LOG", "value": "debug"}],
    },
}


def desired_deployment() -> dict[str, Any]:
    children = render(ModelDeployment.parse(copy.deepcopy(MD)), OperatorConfig())
    return next(obj for obj in children if obj["kind"] == "Deployment")


def as_stored(desired: dict[str, Any]) -> dict[str, Any]:
    """What the API server gives back: defaults, canonical quantities, status, other tools."""
    live = copy.deepcopy(desired)
    live["metadata"].update(uid="d-1", resourceVersion="7", generation=3)
    live["metadata"]["labels"]["team.example.com/cost-center"] = "42"  # another tool's label
    live["status"] = {"replicas": 2, "readyReplicas": 1}
    pod = live["spec"]["template"]["spec"]
    pod["dnsPolicy"] = "ClusterFirst"
    server = pod["containers"][0]
    server["terminationMessagePath"] = "/dev/termination-log"
    server["resources"] = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2"}}
    # A mutating webhook's sidecar, ahead of ours in the list.
    pod["containers"].insert(0, {"name": "proxy", "image": "proxy:1"})
    return live


def edit(*path: str | int, to: Any) -> Any:
    def apply(live: dict[str, Any]) -> None:
        *parents, last = path
        node: Any = live
        for part in parents:
            node = node[part]
        if to is DELETE:
            del node[last]
        else:
            node[last] = to

    return apply


DELETE = object()
SERVER = ("spec", "template", "spec", "containers", 1)  # after the webhook's sidecar


def test_our_own_apply_as_the_api_server_stores_it_has_not_drifted() -> None:
    desired = desired_deployment()
    assert not drifted(as_stored(desired), desired)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(edit(*SERVER, "image", to="attacker/image:latest"), id="image"),
        pytest.param(edit("spec", "replicas", to=7), id="replicas"),
        pytest.param(edit(*SERVER, "env", to=[]), id="env-var-removed"),
        pytest.param(edit(*SERVER, "args", to=["--model-dir=/tmp"]), id="args"),
        pytest.param(edit(*SERVER, "resources", "requests", "cpu", to="250m"), id="cpu"),
        pytest.param(edit(*SERVER, "securityContext", to=DELETE), id="security-context-gone"),
        pytest.param(edit("metadata", "labels", "app.kubernetes.io/instance", to="x"), id="label"),
        pytest.param(edit("metadata", "ownerReferences", to=[]), id="owner-reference-gone"),
        pytest.param(
            edit("spec", "template", "spec", "containers", to=[{"name": "proxy"}]),
            id="server-gone",
        ),
    ],
)
def test_a_hand_edit_of_a_field_we_set_is_drift(change: Any) -> None:
    desired = desired_deployment()
    live = as_stored(desired)
    change(live)
    assert drifted(live, desired)


def test_empty_lists_we_send_may_be_dropped_by_the_api_server() -> None:
    desired = {"spec": {"tolerations": [], "replicas": 1}}
    assert not drifted({"spec": {"replicas": 1}}, desired)
    assert drifted({"spec": {}}, desired)


def test_lists_of_scalars_compare_in_order_and_length() -> None:
    desired = {"args": ["--a", "--b"]}
    assert not drifted({"args": ["--a", "--b"]}, desired)
    assert drifted({"args": ["--b", "--a"]}, desired)
    assert drifted({"args": ["--a", "--b", "--c"]}, desired)


def test_types_are_not_confused() -> None:
    assert drifted({"readOnly": 1}, {"readOnly": True})
    assert drifted({"port": {"number": 1}}, {"port": 1})
    assert drifted({"value": "debug"}, {"value": "info"})


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("500m", Decimal("0.5")),
        ("0.5", Decimal("0.5")),
        (2, Decimal(2)),
        ("1Gi", Decimal(2**30)),
        ("1G", Decimal(10**9)),
        ("1e3", Decimal(1000)),
        ("100Mi", Decimal(100 * 2**20)),
    ],
)
def test_quantities(text: Any, amount: Decimal) -> None:
    assert quantity(text) == amount


@pytest.mark.parametrize("text", ["debug", "1Gx", "", True, None, "--port=8080"])
def test_not_quantities(text: Any) -> None:
    assert quantity(text) is None
