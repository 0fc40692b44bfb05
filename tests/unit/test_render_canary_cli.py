"""`kubeserve render -f md.yaml` shows the canary objects (issue 14).

Through the CLI, as a user runs it: a ModelDeployment with spec.canary and spec.gateway
renders the canary Deployment (and its ConfigMap when the stable has one), the stable and
canary track Services and the HTTPRoute/GRPCRoute. Without a controller's plan the canary is
shown as it starts: sized, at weight 0 (the weight moves only once its pods are Ready).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeserve.cli import main

TRACK = "kubeserve.io/track"


def _md(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubeserve.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "resnet", "namespace": "ml"},
        "spec": {
            "runtime": "onnxruntime",
            "replicas": 9,
            "model": {"uri": "s3://models/resnet/v1/model.onnx"},
            **spec,
        },
    }


def _render(tmp_path: Path, document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    path = tmp_path / "md.yaml"
    path.write_text(yaml.safe_dump(document))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["render", "-f", str(path)])
    assert status == 0, err.getvalue()
    objects = [doc for doc in yaml.safe_load_all(out.getvalue()) if doc]
    by_key = {(doc["kind"], doc["metadata"]["name"]): doc for doc in objects}
    assert len(by_key) == len(objects), "two objects with one kind and name"
    return by_key


@pytest.fixture(autouse=True)
def _no_default_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBESERVE_GATEWAY", raising=False)


CANARY = {"model": {"uri": "s3://models/resnet/v2/model.onnx"}, "trafficPercent": 10}
GATEWAY = {"name": "public", "namespace": "infra"}


def test_render_shows_the_canary_objects_with_a_gateway(tmp_path: Path) -> None:
    objects = _render(tmp_path, _md(gateway=GATEWAY, canary=CANARY))

    canary = objects[("Deployment", "resnet-canary")]
    assert canary["metadata"]["namespace"] == "ml"
    assert canary["spec"]["selector"]["matchLabels"][TRACK] == "canary"
    assert canary["spec"]["template"]["metadata"]["labels"][TRACK] == "canary"
    assert canary["spec"]["replicas"] == 1  # 10 % of 9 stable pods, rounded up
    assert "s3://models/resnet/v2/model.onnx" in yaml.safe_dump(canary)
    assert "s3://models/resnet/v1/model.onnx" not in yaml.safe_dump(canary)

    stable = objects[("Deployment", "resnet")]
    assert stable["spec"]["template"]["metadata"]["labels"][TRACK] == "stable"
    assert "s3://models/resnet/v1/model.onnx" in yaml.safe_dump(stable)

    for track in ("stable", "canary"):
        service = objects[("Service", f"resnet-{track}")]
        assert service["spec"]["selector"][TRACK] == track
    assert objects[("Service", "resnet")]["spec"]["selector"][TRACK] == "stable"

    route = objects[("HTTPRoute", "resnet")]
    assert route["spec"]["parentRefs"][0]["name"] == "public"
    assert route["spec"]["parentRefs"][0]["namespace"] == "infra"
    names = [ref["name"] for rule in route["spec"]["rules"] for ref in rule["backendRefs"]]
    assert "resnet-stable" in names
    # No plan yet (no cluster): the canary starts at weight 0, never before it is Ready.
    weights = {
        ref["name"]: ref.get("weight", 1)
        for rule in route["spec"]["rules"]
        for ref in rule["backendRefs"]
    }
    assert weights.get("resnet-canary", 0) == 0
    assert ("GRPCRoute", "resnet") in objects  # onnxruntime has a gRPC port


def test_render_with_a_service_only_canary_has_no_routes(tmp_path: Path) -> None:
    objects = _render(tmp_path, _md(canary=CANARY))
    assert ("Deployment", "resnet-canary") in objects
    # 9 stable at 10 %: 1 canary pod is exactly 10 % of the ready pods.
    assert objects[("Deployment", "resnet-canary")]["spec"]["replicas"] == 1
    assert not any(kind in ("HTTPRoute", "GRPCRoute") for kind, _ in objects)
    assert ("Service", "resnet-canary") not in objects
    # The main Service selects both tracks: no track in its selector.
    assert TRACK not in objects[("Service", "resnet")]["spec"]["selector"]


def test_render_without_a_canary_is_unchanged(tmp_path: Path) -> None:
    objects = _render(tmp_path, _md())
    assert not any(name.endswith(("-canary", "-stable")) for _, name in objects)
    assert not any(kind in ("HTTPRoute", "GRPCRoute") for kind, _ in objects)
    stable = objects[("Deployment", "resnet")]
    assert TRACK not in stable["spec"]["template"]["metadata"]["labels"]
