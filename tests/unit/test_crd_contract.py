"""The CRD (what `kubectl apply` admits) and the pydantic models (what the operator admits)
agree on one corpus of valid and invalid ModelDeployments."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from crd_validator import crd_errors

from kubeserve.api import InvalidSpec, ModelDeployment
from kubeserve.crd import _structural, crd, crd_yaml

ROOT = Path(__file__).resolve().parents[2]


def md(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"runtime": "onnxruntime", "model": {"uri": "s3://bucket/mnist"}}
    base.update(spec)
    return {
        "apiVersion": "kubeserve.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "mnist", "namespace": "ml"},
        "spec": base,
    }


KEDA_ZERO = {
    "minReplicas": 0,
    "maxReplicas": 2,
    "engine": "keda",
    "metrics": [{"type": "requestsPerSecond", "target": 5, "query": "sum(rate(x[2m]))"}],
}

VALID = {
    "minimal": md(),
    "pvc": md(model={"uri": "pvc://models/mnist/v1"}),
    "https-archive": md(model={"uri": "https://host.example/m.tar.gz", "credentialsSecret": "tok"}),
    "gs": md(model={"uri": "gs://bucket/m", "name": "mnist_v2"}),
    "replicas-zero": md(replicas=0),
    "resources": md(resources={"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 2}}),
    "env": md(
        env=[
            {"name": "A", "value": "1"},
            {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ]
    ),
    "gpu-full": md(
        gpu={
            "count": 2,
            "product": ["NVIDIA-L4"],
            "minMemoryMiB": 20000,
            "runtimeClassName": "nvidia",
        }
    ),
    "gpu-mig": md(gpu={"migProfile": "1g.10gb"}),
    "gpu-amd": md(gpu={"count": 1, "resourceName": "amd.com/gpu"}),
    "hpa": md(
        autoscaling={"minReplicas": 1, "maxReplicas": 4, "metrics": [{"type": "cpu", "target": 60}]}
    ),
    "keda-zero": md(
        autoscaling={
            "minReplicas": 0,
            "maxReplicas": 2,
            "engine": "keda",
            "metrics": [
                {
                    "type": "requestsPerSecond",
                    "target": 5,
                    # Measured outside the pods, so it can wake a model scaled to zero.
                    "query": 'sum(rate(nginx_ingress_controller_requests{service="mnist"}[2m]))',
                }
            ],
        }
    ),
    "recreate": md(rollout={"strategy": "Recreate"}),
    "rolling": md(rollout={"maxSurge": 0, "maxUnavailable": "50%"}),
    "batching": md(batching={"maxBatchSize": 32, "maxDelayMs": 2.5}),
    "session": md(sessionOptions={"intraOpThreads": 2, "graphOptimizationLevel": "basic"}),
    "threads-onnx": md(threads={"intraOp": 2, "interOp": 1}),
    "threads-with-session-level": md(
        threads={"intraOp": 2}, sessionOptions={"graphOptimizationLevel": "basic"}
    ),
    "threads-session-disjoint": md(threads={"intraOp": 2}, sessionOptions={"interOpThreads": 1}),
    "threads-tfserving": md(runtime="tfserving", threads={"intraOp": 4, "interOp": 2}),
    "threads-torchserve": md(
        runtime="torchserve", model={"uri": "pvc://c/p"}, threads={"intraOp": 2, "workers": 2}
    ),
    "netpol": md(
        networkPolicy={"enabled": True, "from": [{"podSelector": {"matchLabels": {"a": "b"}}}]}
    ),
    "tolerations": md(tolerations=[{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]),
    "tfserving": md(runtime="tfserving"),
    "torchserve": md(runtime="torchserve", model={"uri": "pvc://c/p"}),
    "canary": md(canary={"model": {"uri": "s3://bucket/mnist-v2"}, "trafficPercent": 10}),
    "canary-full": md(
        model={"uri": "s3://bucket/mnist", "name": "mnist"},
        gateway={"name": "gw", "namespace": "infra", "sectionName": "http", "hostnames": ["m.io"]},
        canary={
            "model": {"uri": "s3://bucket/mnist-v2", "name": "mnist"},
            "image": "example.com/onnx:2",
            "env": [{"name": "A", "value": "1"}],
            "resources": {"requests": {"cpu": "500m"}},
            "replicas": 2,
            "trafficPercent": 25,
            "progressDeadlineSeconds": 900,
            "analysis": {"maxErrorRatio": 0.01, "maxLatencyMs": 250, "failureLimit": 3},
        },
    ),
    "canary-mirror": md(
        gateway={"name": "gw"},
        canary={"model": {"uri": "s3://bucket/mnist-v2"}, "mirror": True, "trafficPercent": 100},
    ),
    "canary-same-uri-new-image": md(
        canary={"model": {"uri": "s3://bucket/mnist"}, "image": "example.com/onnx:2"}
    ),
    "canary-hpa": md(
        autoscaling={"maxReplicas": 4},
        canary={"model": {"uri": "s3://bucket/mnist-v2"}, "trafficPercent": 50},
    ),
}

# name -> (object, field the operator must name)
INVALID = {
    "unknown-runtime": (md(runtime="triton"), "spec.runtime"),
    "missing-uri": (md(model={}), "spec.model.uri"),
    "bad-scheme": (md(model={"uri": "ftp://host/m"}), "spec.model.uri"),
    "file-scheme-in-cluster": (md(model={"uri": "file:///models/m"}), "spec.model.uri"),
    "no-bucket": (md(model={"uri": "s3:///path"}), "spec.model.uri"),
    "embedded-credentials": (md(model={"uri": "https://user:pw@host.example/m"}), "spec.model.uri"),
    "traversal": (md(model={"uri": "s3://bucket/a/../b"}), "spec.model.uri"),
    "secret-with-pvc": (md(model={"uri": "pvc://c/p", "credentialsSecret": "s"}), "spec.model"),
    "negative-replicas": (md(replicas=-1), "spec.replicas"),
    "huge-replicas": (md(replicas=10**9), "spec.replicas"),
    "min-over-max": (md(autoscaling={"minReplicas": 5, "maxReplicas": 2}), "spec.autoscaling"),
    "zero-min-hpa": (md(autoscaling={"minReplicas": 0, "maxReplicas": 2}), "spec.autoscaling"),
    "gpu-count-zero": (md(gpu={"count": 0}), "spec.gpu.count"),
    "gpu-fractional": (md(gpu={"count": 0.5}), "spec.gpu.count"),
    "mig-with-count": (md(gpu={"count": 2, "migProfile": "1g.10gb"}), "spec.gpu"),
    "mig-non-nvidia": (
        md(gpu={"resourceName": "amd.com/gpu", "migProfile": "1g.10gb"}),
        "spec.gpu",
    ),
    "bad-mig": (md(gpu={"migProfile": "big"}), "spec.gpu.migProfile"),
    "unknown-metric": (
        md(autoscaling={"maxReplicas": 2, "metrics": [{"type": "magic", "target": 1}]}),
        "spec.autoscaling.metrics.0.type",
    ),
    "zero-target": (
        md(autoscaling={"maxReplicas": 2, "metrics": [{"type": "cpu", "target": 0}]}),
        "spec.autoscaling.metrics.0.target",
    ),
    "recreate-with-surge": (md(rollout={"strategy": "Recreate", "maxSurge": 1}), "spec.rollout"),
    "session-on-tfserving": (md(runtime="tfserving", sessionOptions={"intraOpThreads": 1}), "spec"),
    "workers-on-onnx": (md(threads={"workers": 2}), "spec"),
    "workers-on-tfserving": (md(runtime="tfserving", threads={"workers": 2}), "spec"),
    "inter-op-on-torchserve": (md(runtime="torchserve", threads={"interOp": 2}), "spec"),
    "threads-twice": (md(threads={"intraOp": 2}, sessionOptions={"intraOpThreads": 4}), "spec"),
    "inter-threads-twice": (
        md(threads={"interOp": 1}, sessionOptions={"interOpThreads": 1}),
        "spec",
    ),
    "threads-zero": (md(threads={"intraOp": 0}), "spec.threads.intraOp"),
    "workers-too-many": (
        md(runtime="torchserve", threads={"workers": 65}),
        "spec.threads.workers",
    ),
    "env-both": (md(env=[{"name": "A", "value": "1", "valueFrom": {}}]), "spec.env.0"),
    "bad-quantity": (md(resources={"requests": {"cpu": "lots"}}), "spec.resources.requests.cpu"),
    "batch-too-big": (md(batching={"maxBatchSize": 100000}), "spec.batching.maxBatchSize"),
    "wrong-type": (md(replicas="three"), "spec.replicas"),
    "canary-same-as-stable": (md(canary={"model": {"uri": "s3://bucket/mnist"}}), "spec"),
    "canary-other-name": (
        md(canary={"model": {"uri": "s3://bucket/v2", "name": "other"}}),
        "spec",
    ),
    "canary-keda-http": (
        md(
            autoscaling={
                "engine": "keda-http",
                "maxReplicas": 2,
                "metrics": [{"type": "concurrency", "target": 4}],
            },
            canary={"model": {"uri": "s3://bucket/v2"}},
        ),
        "spec",
    ),
    "canary-scale-to-zero": (
        md(
            autoscaling=KEDA_ZERO,
            canary={"model": {"uri": "s3://bucket/v2"}},
        ),
        "spec",
    ),
    "canary-mirror-no-share": (
        md(canary={"model": {"uri": "s3://bucket/v2"}, "mirror": True}),
        "spec.canary",
    ),
    "canary-percent-over-100": (
        md(canary={"model": {"uri": "s3://bucket/v2"}, "trafficPercent": 101}),
        "spec.canary.trafficPercent",
    ),
    "canary-zero-replicas": (
        md(canary={"model": {"uri": "s3://bucket/v2"}, "replicas": 0}),
        "spec.canary.replicas",
    ),
    "canary-bad-uri": (md(canary={"model": {"uri": "ftp://h/m"}}), "spec.canary.model.uri"),
    "analysis-no-threshold": (
        md(canary={"model": {"uri": "s3://bucket/v2"}, "analysis": {"intervalSeconds": 30}}),
        "spec.canary.analysis",
    ),
    "gateway-bad-namespace": (md(gateway={"name": "gw", "namespace": "A_B"}), "spec.gateway"),
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_objects_pass_both_layers(name: str) -> None:
    obj = VALID[name]
    assert crd_errors(obj) == []
    ModelDeployment.parse(obj)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_objects_fail_both_layers_naming_the_field(name: str) -> None:
    obj, field = INVALID[name]
    assert crd_errors(obj), "the CRD must reject this at kubectl apply"
    with pytest.raises(InvalidSpec) as caught:
        ModelDeployment.parse(obj)
    assert str(caught.value).startswith(field), str(caught.value)


def test_unknown_fields_are_rejected_by_the_operator_with_the_field_name() -> None:
    obj = md(replica=3)  # a typo; kubectl's strict field validation rejects it too
    with pytest.raises(InvalidSpec, match=r"^spec\.replica: unknown field"):
        ModelDeployment.parse(obj)


def test_local_serve_admits_local_paths_that_clusters_refuse() -> None:
    obj = md(model={"uri": "./model"})
    with pytest.raises(InvalidSpec):
        ModelDeployment.parse(obj)
    assert ModelDeployment.parse(obj, local=True).spec.model.uri == "./model"


def test_every_example_is_accepted_by_the_crd_and_the_operator() -> None:
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    assert len(examples) >= 3
    for path in examples:
        for doc in yaml.safe_load_all(path.read_text()):
            assert crd_errors(doc) == [], path.name
            ModelDeployment.parse(doc)


def test_crds_folder_is_generated_from_the_models() -> None:
    on_disk = (ROOT / "crds" / "modeldeployments.kubeserve.io.yaml").read_text()
    assert on_disk == crd_yaml(), "run `make crd` after changing api.py"


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        found += _walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        found += _walk(schema["items"], f"{path}[]")
    return found


def test_every_spec_and_status_field_has_a_description() -> None:
    root = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for top in ("spec", "status"):
        for path, node in _walk(root["properties"][top], top):
            if path.endswith("[]"):
                continue
            assert node.get("description"), f"{path} needs a description (kubectl explain)"


def test_schema_is_structural() -> None:
    root = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(root):
        assert ("$ref" not in node and "anyOf" not in node) or node.get(
            "x-kubernetes-int-or-string"
        ), path
        assert node.get("type") or node.get("x-kubernetes-int-or-string") or path == ".metadata", (
            path
        )
        assert node.get("additionalProperties") is not False, path


def test_crd_metadata_for_kubectl() -> None:
    spec = crd()["spec"]
    assert spec["names"]["shortNames"] == ["md"]
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Runtime",
        "Ready",
        "Replicas",
        "URL",
        "Canary",
        "Cold-Start",
        "Age",
    ]


def test_mutating_a_valid_object_does_not_leak_between_cases() -> None:
    obj = copy.deepcopy(VALID["minimal"])
    ModelDeployment.parse(obj)
    assert obj == VALID["minimal"]


def test_numeric_exclusive_bounds_become_openapi_v3_flags() -> None:
    # pydantic's gt=0 is JSON Schema 2020-12's `exclusiveMinimum: 0`; an API server refuses
    # a number there ("cannot unmarshal number ... of type bool") and with it the whole CRD.
    target = _structural({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 9})
    assert target == {
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 9,
        "exclusiveMaximum": True,
    }
    for path, node in _walk(crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]):
        for flag in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(node.get(flag, True), bool), f"{path}.{flag}"


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"type": "string", "const": "x"}}},
        {"type": "array", "prefixItems": [{"type": "string"}]},
        {"type": "object", "propertyNames": {"pattern": "^a"}},
        {"type": "number", "minimum": 1, "exclusiveMinimum": 0},
    ],
)
def test_constructs_a_crd_cannot_hold_are_refused_at_generation(schema: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"OpenAPI v3\.0|keep one bound"):
        _structural(schema)
