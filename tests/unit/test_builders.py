"""Table-driven tests of the pure builders, per runtime, and of the rendered set."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import kubernetes_validate
import pytest

import kubeserve.resources.labels as labels_module
from kubeserve.api import ModelDeployment
from kubeserve.config import OperatorConfig
from kubeserve.render import render
from kubeserve.resources.names import MAX_NAME, child_name, label_value

K8S_VERSION = "1.32.0"
CFG = OperatorConfig()


def md(name: str = "mnist", uid: str | None = "u-1", **spec: Any) -> ModelDeployment:
    body: dict[str, Any] = {"runtime": "onnxruntime", "model": {"uri": "s3://bucket/mnist"}, **spec}
    meta: dict[str, Any] = {"name": name, "namespace": "ml"}
    if uid:
        meta["uid"] = uid
    return ModelDeployment.parse(
        {
            "apiVersion": "kubeserve.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": meta,
            "spec": body,
        }
    )


def by_kind(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objs}


def server(objs: list[dict[str, Any]]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = by_kind(objs)["Deployment"]["spec"]["template"]["spec"][
        "containers"
    ]
    return containers[0]


RUNTIME_TABLE = [
    # runtime, command, args that must be present, container ports, service ports, readiness path
    (
        "onnxruntime",
        ["python", "-m", "kubeserve.dataplane.onnx_server"],
        [
            "--model-dir=/mnt/models",
            "--model-name=mnist",
            "--port=8080",
            "--grpc-port=9000",
            "--device=cpu",
        ],
        {"http": 8080, "grpc": 9000},
        {"http": 8080, "grpc": 9000},
        "/v2/health/ready",
    ),
    (
        "tfserving",
        ["tensorflow_model_server"],
        [
            "--port=8500",
            "--rest_api_port=8501",
            "--model_name=mnist",
            "--model_base_path=/mnt/models",
            "--monitoring_config_file=/etc/kubeserve/monitoring_config.txt",
        ],
        {"http": 8501, "grpc": 8500},
        {"http": 8080, "grpc": 9000},
        "/v1/models/mnist/metadata",
    ),
    (
        "torchserve",
        ["torchserve"],
        [
            "--foreground",
            "--ts-config=/etc/kubeserve/config.properties",
            "--model-store=/mnt/models",
            "--disable-token-auth",
        ],
        {"http": 8080, "metrics": 8082},
        {"http": 8080, "metrics": 8082},
        # An exec probe: the model's workers, from the loopback-only management API.
        "http://127.0.0.1:8081/models/mnist",
    ),
]


@pytest.mark.parametrize(
    ("runtime", "command", "args", "ports", "service_ports", "ready_path"), RUNTIME_TABLE
)
def test_runtime_container(
    runtime: str,
    command: list[str],
    args: list[str],
    ports: dict[str, int],
    service_ports: dict[str, int],
    ready_path: str,
) -> None:
    objs = render(md(runtime=runtime), CFG)
    container = server(objs)
    # The image entrypoint runs tini and then `command`; we pass only args.
    assert "command" not in container
    assert command
    assert set(args) <= set(container["args"])
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == ports
    ready = container["readinessProbe"]
    assert (ready["exec"]["command"][-1] if "exec" in ready else ready["httpGet"]["path"]) == (
        ready_path
    )
    assert container["image"] == f"kubeserve/{runtime}:0.1.0"
    svc = by_kind(objs)["Service"]
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == service_ports
    assert all(p["targetPort"] in ports for p in svc["spec"]["ports"])


def test_torchserve_keeps_management_api_private_and_disables_token_auth() -> None:
    objs = render(md(runtime="torchserve", batching={"maxBatchSize": 8, "maxDelayMs": 50}), CFG)
    config = by_kind(objs)["ConfigMap"]["data"]["config.properties"]
    props = dict(line.split("=", 1) for line in config.splitlines())
    assert props["management_address"] == "http://127.0.0.1:8081"
    assert props["disable_token_authorization"] == "true"
    assert props["enable_model_api"] == "false"
    assert props["grpc_inference_address"] == "127.0.0.1"
    assert '"batchSize": 8' in props["models"] and '"maxBatchDelay": 50' in props["models"]
    assert props["load_models"] == "mnist.mar"
    svc_ports = {p["port"] for p in by_kind(objs)["Service"]["spec"]["ports"]}
    assert 8081 not in svc_ports


def test_tfserving_batching_and_monitoring_files() -> None:
    objs = render(md(runtime="tfserving", batching={"maxBatchSize": 16, "maxDelayMs": 2}), CFG)
    data = by_kind(objs)["ConfigMap"]["data"]
    assert 'path: "/monitoring/prometheus/metrics"' in data["monitoring_config.txt"]
    assert "max_batch_size { value: 16 }" in data["batching_parameters.txt"]
    assert "batch_timeout_micros { value: 2000 }" in data["batching_parameters.txt"]
    assert "--enable_batching=true" in server(objs)["args"]


def test_onnxruntime_has_no_config_map_and_passes_session_options() -> None:
    objs = render(md(sessionOptions={"intraOpThreads": 2, "graphOptimizationLevel": "basic"}), CFG)
    assert "ConfigMap" not in by_kind(objs)
    args = server(objs)["args"]
    assert "--intra-op-threads=2" in args and "--graph-optimization-level=basic" in args
    assert {"name": "ORT_DISABLE_TELEMETRY", "value": "1"} in server(objs)["env"]


STORAGE_TABLE = [
    # uri, credentials secret, expect init container, expected server mount extras
    ("s3://bucket/m", None, True, {}),
    ("gs://bucket/m", "gcs-key", True, {}),
    ("https://host.example/m.tar.gz", None, True, {}),
    ("pvc://models/mnist/v1", None, False, {"subPath": "mnist/v1"}),
    ("pvc://models", None, False, {}),
]


@pytest.mark.parametrize(("uri", "secret", "init", "mount_extra"), STORAGE_TABLE)
def test_model_storage_wiring(
    uri: str, secret: str | None, init: bool, mount_extra: dict[str, str]
) -> None:
    model: dict[str, Any] = {"uri": uri}
    if secret:
        model["credentialsSecret"] = secret
    pod = by_kind(render(md(model=model), CFG))["Deployment"]["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/mnt/models")
    assert mount["readOnly"] is True
    assert {k: mount[k] for k in mount_extra} == mount_extra
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    if init:
        assert volume == {"name": "model", "emptyDir": {}}
        (initc,) = pod["initContainers"]
        assert initc["args"][:2] == [uri, "/mnt/models"]
        assert initc["image"] == "kubeserve/storage-initializer:0.1.0"
        secret_volumes = [v for v in pod["volumes"] if "secret" in v]
        if secret:
            assert secret_volumes[0]["secret"]["secretName"] == secret
            # The secret reaches only the init container, as files, never as literal env.
            assert any(m["name"] == secret_volumes[0]["name"] for m in initc["volumeMounts"])
            assert not any(
                m["name"] == secret_volumes[0]["name"] for m in pod["containers"][0]["volumeMounts"]
            )
        else:
            assert secret_volumes == []
    else:
        assert "initContainers" not in pod
        assert volume["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}


def test_user_env_overrides_defaults_without_duplicates() -> None:
    container = server(
        render(
            md(env=[{"name": "ORT_DISABLE_TELEMETRY", "value": "0"}, {"name": "X", "value": "1"}]),
            CFG,
        )
    )
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names))
    assert {"name": "ORT_DISABLE_TELEMETRY", "value": "0"} in container["env"]


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        (None, {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}),
        ({"requests": {"cpu": "500m"}}, {"requests": {"cpu": "500m"}}),
        (
            {"limits": {"cpu": 2, "memory": "1Gi"}},
            {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "1Gi"}},
        ),
    ],
)
def test_resources(resources: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    spec = {"resources": resources} if resources else {}
    assert server(render(md(**spec), CFG))["resources"] == expected


def test_replicas_are_left_to_the_autoscaler() -> None:
    plain = by_kind(render(md(replicas=3), CFG))["Deployment"]["spec"]
    scaled = by_kind(render(md(replicas=3, autoscaling={"maxReplicas": 5}), CFG))["Deployment"][
        "spec"
    ]
    assert plain["replicas"] == 3
    assert "replicas" not in scaled


def test_children_have_no_owner_reference_offline() -> None:
    # `kubeserve render` of a file has no uid: nothing to own yet.
    for obj in render(md(uid=None), CFG):
        assert "ownerReferences" not in obj["metadata"]


def test_image_override_and_config() -> None:
    cfg = OperatorConfig.from_env({"KUBESERVE_IMAGE_ONNXRUNTIME": "mirror.local/ort:1"})
    assert server(render(md(), cfg))["image"] == "mirror.local/ort:1"
    assert server(render(md(image="custom/ort:2"), cfg))["image"] == "custom/ort:2"
    assert server(render(md(gpu={"count": 1}), cfg))["image"] == "kubeserve/onnxruntime:0.1.0-gpu"


@pytest.mark.parametrize("name", ["a", "mnist", "9lives", "x" * 63, "y" * 200, "a.b.c", "m" * 253])
def test_child_names_are_valid_and_deterministic(name: str) -> None:
    for suffix in ("", "config"):
        child = child_name(name, suffix)
        assert len(child) <= MAX_NAME
        assert child[0].isalpha() and child[-1].isalnum()
        assert all(c.isalnum() or c == "-" for c in child)
        assert child == child_name(name, suffix)
    assert len(label_value(name)) <= 63
    if len(name) > 63:
        assert child_name(name) != child_name(name[:-1] + "z"), "long names must not collide"


@pytest.mark.parametrize("runtime", ["onnxruntime", "tfserving", "torchserve"])
@pytest.mark.parametrize("uri", ["s3://models/m", "pvc://claim/dir", "https://h.example/m.zip"])
@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"gpu": {"count": 1, "product": ["NVIDIA-L4"], "minMemoryMiB": 16000}},
        {"autoscaling": {"minReplicas": 2, "maxReplicas": 4}, "networkPolicy": {"enabled": True}},
        {
            "env": [{"name": "A", "value": "b"}],
            "tolerations": [{"key": "k", "operator": "Exists"}],
            "nodeSelector": {"pool": "ml"},
        },
    ],
)
def test_rendered_objects_validate_against_kubernetes_schemas(
    runtime: str, uri: str, extra: dict[str, Any]
) -> None:
    for obj in render(md(name="x" * 100, runtime=runtime, model={"uri": uri}, **extra), CFG):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        assert len(obj["metadata"]["name"]) <= MAX_NAME
        for value in obj["metadata"]["labels"].values():
            assert len(value) <= 63


# -- what an operator upgrade may and may not change in the pod template -----------------------


@pytest.mark.parametrize("runtime", ["onnxruntime", "tfserving", "torchserve"])
def test_an_operator_upgrade_leaves_the_pod_template_alone(
    runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec: dict[str, Any] = {"runtime": runtime, "image": f"mirror.local/{runtime}:pinned"}

    def rendered(version: str) -> dict[str, Any]:
        monkeypatch.setattr(labels_module, "__version__", version)
        return by_kind(render(md(**spec), CFG))["Deployment"]

    old, new = rendered("0.1.0"), rendered("0.1.1")
    # A changed template is a rollout of every model server on every operator upgrade.
    assert old["spec"]["template"] == new["spec"]["template"]
    assert "app.kubernetes.io/version" not in new["spec"]["template"]["metadata"]["labels"]
    # The Deployment itself (and every other child) still says which operator made it.
    assert old["metadata"]["labels"]["app.kubernetes.io/version"] == "0.1.0"
    assert new["metadata"]["labels"]["app.kubernetes.io/version"] == "0.1.1"
    for child in render(md(**spec), CFG):
        assert child["metadata"]["labels"]["app.kubernetes.io/version"] == "0.1.1"


CONFIG_HASH = "kubeserve.io/config-hash"


def template_annotations(objs: list[dict[str, Any]]) -> dict[str, str]:
    meta = by_kind(objs)["Deployment"]["spec"]["template"]["metadata"]
    return dict(meta.get("annotations") or {})


@pytest.mark.parametrize(
    ("runtime", "before", "after"),
    [
        # TorchServe reads config.properties (batch size, delay) only at start.
        ("torchserve", None, {"maxBatchSize": 8, "maxDelayMs": 50}),
        ("torchserve", {"maxBatchSize": 8, "maxDelayMs": 50}, {"maxBatchSize": 8, "maxDelayMs": 5}),
        # TF Serving reads batching_parameters.txt only at start; the args do not change.
        ("tfserving", {"maxBatchSize": 16, "maxDelayMs": 2}, {"maxBatchSize": 32, "maxDelayMs": 2}),
    ],
)
def test_a_config_only_change_changes_the_pod_template(
    runtime: str, before: dict[str, Any] | None, after: dict[str, Any]
) -> None:
    def rendered(batching: dict[str, Any] | None) -> list[dict[str, Any]]:
        spec: dict[str, Any] = {"runtime": runtime}
        if batching:
            spec["batching"] = batching
        return render(md(**spec), CFG)

    old, new = rendered(before), rendered(after)
    assert by_kind(old)["ConfigMap"]["data"] != by_kind(new)["ConfigMap"]["data"]
    # Servers read the ConfigMap only at start: the template must change so the pods roll.
    assert template_annotations(old)[CONFIG_HASH] != template_annotations(new)[CONFIG_HASH]
    # ... and nothing else needs to: the same spec gives the same hash.
    assert template_annotations(new) == template_annotations(rendered(after))


def test_the_config_hash_is_the_config_maps_data() -> None:
    objs = render(md(runtime="torchserve"), CFG)
    data = by_kind(objs)["ConfigMap"]["data"]
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    assert template_annotations(objs)[CONFIG_HASH] == hashlib.sha256(canonical).hexdigest()
    # No ConfigMap, no hash (ONNX Runtime takes everything as args).
    assert CONFIG_HASH not in template_annotations(render(md(), CFG))


@pytest.mark.parametrize("runtime", ["onnxruntime", "tfserving", "torchserve"])
@pytest.mark.parametrize("extra", [{}, {"gpu": {"count": 1}}, {"autoscaling": {"maxReplicas": 3}}])
def test_the_server_outlives_its_endpoints_on_the_way_down(
    runtime: str, extra: dict[str, Any]
) -> None:
    pod = by_kind(render(md(runtime=runtime, **extra), CFG))["Deployment"]["spec"]["template"][
        "spec"
    ]
    (container,) = pod["containers"]
    # Endpoints and proxies learn of a terminating pod after SIGTERM: the kubelet's own
    # sleep action (Kubernetes 1.30+, no sleep binary in the image) keeps serving meanwhile.
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    # The grace period counts the preStop sleep too: SIGKILL must wait for the drain after it.
    assert pod["terminationGracePeriodSeconds"] > 5 + 10
    assert all("lifecycle" not in c for c in pod.get("initContainers", []))
