"""Pod Security Standard "restricted": every pod the chart runs, and every pod the operator
renders (examples/ and a matrix of runtimes x GPU x storage), init containers included."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartlib import ROOT, VALUES_FILES, Render
from tests.policy.pss import object_violations, pod_specs

from kubeserve.api import ModelDeployment, Runtime
from kubeserve.config import OperatorConfig
from kubeserve.render import render as render_children

pytestmark = pytest.mark.chart

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
STORAGE = {
    "pvc": {"uri": "pvc://models/resnet"},
    "s3": {"uri": "s3://bucket/resnet/", "credentialsSecret": "s3-creds"},
    "https": {"uri": "https://models.example.com/resnet/model.tar.gz"},
}


def pods_in(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [obj for obj in objects if list(pod_specs(obj))]


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda p: p.stem)
def test_chart_pods_are_restricted(render: Render, values: Path) -> None:
    objects = render(values)
    workloads = pods_in(objects)
    assert [w["kind"] for w in workloads] == ["Deployment"]
    for workload in workloads:
        assert object_violations(workload) == []


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_operator_pods_for_the_examples_are_restricted(example: Path) -> None:
    docs = [doc for doc in yaml.safe_load_all(example.read_text()) if doc]
    assert docs
    for doc in docs:
        doc.setdefault("metadata", {}).setdefault("uid", "00000000-0000-0000-0000-000000000001")
        children = render_children(ModelDeployment.parse(doc), OperatorConfig())
        workloads = pods_in(children)
        assert workloads, f"{example.name}: no pod template rendered"
        for workload in workloads:
            assert object_violations(workload) == []


def model_deployment(runtime: Runtime, gpu: bool, storage: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"runtime": runtime.value, "model": dict(STORAGE[storage])}
    if gpu:
        spec["gpu"] = {"count": 1, "product": ["NVIDIA-A100-SXM4-80GB"]}
    if runtime == Runtime.ONNXRUNTIME:
        spec["batching"] = {"maxBatchSize": 8, "maxDelayMs": 2}
    return {
        "apiVersion": "kubeserve.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": f"m-{runtime.value}", "namespace": "ml", "uid": "u-1"},
        "spec": spec,
    }


MATRIX = list(itertools.product(Runtime, (False, True), STORAGE))


@pytest.mark.parametrize(
    ("runtime", "gpu", "storage"),
    MATRIX,
    ids=[f"{r.value}-{'gpu' if g else 'cpu'}-{s}" for r, g, s in MATRIX],
)
def test_operator_pods_are_restricted(runtime: Runtime, gpu: bool, storage: str) -> None:
    md = ModelDeployment.parse(model_deployment(runtime, gpu, storage))
    workloads = pods_in(render_children(md, OperatorConfig()))
    assert len(workloads) == 1
    spec = next(iter(pod_specs(workloads[0])))
    # Object-store URIs download in an init container: it must be checked too.
    assert bool(spec.get("initContainers")) == (storage != "pvc")
    assert object_violations(workloads[0]) == []


def test_the_checker_sees_a_violation_in_an_operator_pod() -> None:
    """Guard against a vacuous pass: break one rendered pod and watch the check fail."""
    md = ModelDeployment.parse(model_deployment(Runtime.ONNXRUNTIME, False, "https"))
    workload = pods_in(render_children(md, OperatorConfig()))[0]
    init = workload["spec"]["template"]["spec"]["initContainers"][0]
    init["securityContext"]["allowPrivilegeEscalation"] = True
    assert object_violations(workload) == [
        "Deployment/m-onnxruntime: Privilege Escalation: "
        "initContainers[0](storage-initializer).securityContext.allowPrivilegeEscalation "
        "must be false"
    ]
