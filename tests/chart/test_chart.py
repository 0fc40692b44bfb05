"""The Helm chart with the real helm binary: lint, render, Kubernetes schemas, values schema,
the CRD copy, and the operator Deployment the chart produces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from chartlib import (
    CHART,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    ROOT,
    SCHEMA_VERSION,
    VALUES,
    VALUES_FILES,
    Render,
    of_kind,
    one,
    run_helm,
)

from kubeserve import __version__
from kubeserve.config import ENV_VARS

pytestmark = pytest.mark.chart

# Kinds kubernetes-validate has no schema for (CRD-defined); checked by hand below.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def values_id(path: Path) -> str:
    return path.stem


def deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "Deployment")


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = deployment(objects)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    result: dict[str, Any] = containers[0]
    return result


# From the downward API, for leader election; every other variable is a config.ENV_VARS value.
DOWNWARD_API = {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}


def env(objects: list[dict[str, Any]]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(objects)["env"] if "value" in e}


def test_the_values_files_exist() -> None:
    assert {p.stem for p in VALUES_FILES} >= {"default", "namespaced", "metrics", "custom-images"}


def test_chart_versions_match_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__ == "0.1.0"
    assert chart["version"] == "0.1.0"
    assert chart["apiVersion"] == "v2"


@pytest.mark.parametrize("values", VALUES_FILES, ids=values_id)
def test_helm_lint(helm: str, values: Path) -> None:
    result = run_helm(
        helm,
        "lint",
        str(CHART),
        "--strict",
        "--values",
        str(values),
        "--kube-version",
        KUBE_VERSION,
    )
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values", VALUES_FILES, ids=values_id)
def test_every_object_validates_against_the_kubernetes_schema(render: Render, values: Path) -> None:
    objects = render(values)
    assert objects
    checked = 0
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")
        checked += 1
    assert checked >= 6


@pytest.mark.parametrize("values", VALUES_FILES, ids=values_id)
def test_every_object_is_labelled_and_namespaced_in_the_release(
    render: Render, values: Path
) -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding"}
    watched = set(yaml.safe_load(values.read_text()).get("watchNamespaces", []) or [])
    for obj in render(values):
        meta = obj["metadata"]
        assert meta["labels"]["app.kubernetes.io/part-of"] == "kubeserve"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in meta
        elif obj["kind"] in {"Role", "RoleBinding"} and meta["name"].endswith("-leader-election"):
            assert meta["namespace"] == NAMESPACE  # the Lease lives with the operator
        elif obj["kind"] in {"Role", "RoleBinding"}:
            assert meta["namespace"] in watched
        elif obj["kind"] == "ConfigMap":  # dashboard, adapter rules: where their reader is
            assert meta["namespace"] in {NAMESPACE, "monitoring"}
        else:
            assert meta["namespace"] == NAMESPACE


def test_the_crd_in_the_chart_is_byte_identical_to_crds() -> None:
    top = sorted(p.name for p in (ROOT / "crds").iterdir())
    chart = sorted(p.name for p in (CHART / "crds").iterdir())
    assert chart == top, "charts/kubeserve/crds/ must hold exactly the files of crds/"
    for name in top:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), (
            f"charts/kubeserve/crds/{name} differs from crds/{name}: run `make crd`"
        )


def test_the_crd_validates_against_the_kubernetes_schema() -> None:
    for path in (CHART / "crds").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert doc["kind"] == "CustomResourceDefinition"
                kubernetes_validate.validate(doc, SCHEMA_VERSION, strict=True)


def test_helm_template_does_not_render_the_crd(render: Render) -> None:
    # crds/ is installed by `helm install` itself, once, before the templates.
    assert of_kind(render(), "CustomResourceDefinition") == []


@pytest.mark.parametrize(
    ("sets", "error"),
    [
        (["bogus=1"], "additional properties 'bogus' not allowed"),
        (["operator.logFormat=xml"], "/operator/logFormat"),
        (["operator.logLevel=LOUD"], "/operator/logLevel"),
        (["operator.resyncSeconds=0"], "/operator/resyncSeconds"),
        (["operator.resyncSeconds=soon"], "/operator/resyncSeconds"),
        (["image.pullPolicy=Sometimes"], "/image/pullPolicy"),
        (["modelImages.pullPolicy=Sometimes"], "/modelImages/pullPolicy"),
        (["modelImages.tritonserver=x"], "/modelImages"),
        (["modelImages.onnxruntime=has space"], "/modelImages/onnxruntime"),
        (["watchNamespaces={Team_A}"], "/watchNamespaces/0"),
        (["watchNamespaces={a,a}"], "/watchNamespaces"),
        (["metrics.port=0"], "/metrics/port"),
        (["metrics.port=70000"], "/metrics/port"),
        (["health.port=http"], "/health/port"),
        (["metrics.serviceMonitor.interval=often"], "/metrics/serviceMonitor/interval"),
        (["keda.prometheusUrl=prometheus:9090"], "/keda/prometheusUrl"),
        (["clusterDomain=Cluster_Local"], "/clusterDomain"),
        (["resources.requests.memory=lots"], "/resources/requests/memory"),
        (["rbac.create=maybe"], "/rbac/create"),
        (["networkPolicy.allowAll=true"], "/networkPolicy"),
        (["serviceAccount.create=false"], "serviceAccount.name is required"),
        (["metrics.enabled=false", "metrics.serviceMonitor.enabled=true"], "needs metrics.enabled"),
        (["metrics.port=8080"], "metrics.port and health.port must differ"),
    ],
    ids=lambda v: v if isinstance(v, str) else ",".join(v),
)
def test_invalid_values_are_rejected(helm: str, sets: list[str], error: str) -> None:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for pair in sets:
        args += ["--set", pair]
    result = run_helm(helm, *args, check=False)
    assert result.returncode != 0, f"helm accepted {sets}"
    assert error in result.stderr, result.stderr


def test_old_kubernetes_is_rejected(helm: str) -> None:
    result = run_helm(
        helm, "template", RELEASE, str(CHART), "--kube-version", "1.29.0", check=False
    )
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr or "incompatible" in result.stderr


def test_the_values_schema_covers_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        if "properties" in node:  # a structured object: closed, and every value declared
            assert node.get("additionalProperties") is False, f"{path or '/'} is open"
            for key, sub in value.items():
                assert key in node["properties"], f"{path}.{key} is not in values.schema.json"
                walk(sub, node["properties"][key], f"{path}.{key}")

    walk(values, schema, "")


def test_every_value_is_commented() -> None:
    """Each key of values.yaml has a comment right above it (or on a parent's block)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    uncommented = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("-"):
            continue
        if ":" not in stripped:
            continue
        previous = lines[i - 1].strip() if i else ""
        is_block = stripped.endswith(":")  # a parent whose children carry the comments
        commented = previous.startswith("#") or is_block or "#" in stripped
        # A sibling in a commented group (e.g. requests/limits under resources) is fine.
        if not commented and not _in_commented_group(lines, i):
            uncommented.append(stripped)
    assert uncommented == []


def _in_commented_group(lines: list[str], index: int) -> bool:
    indent = len(lines[index]) - len(lines[index].lstrip())
    for j in range(index - 1, -1, -1):
        line = lines[j]
        if not line.strip():
            return False
        current = len(line) - len(line.lstrip())
        if current < indent:
            return True  # reached the parent: the group hangs off a key
        if line.strip().startswith("#") and current == indent:
            return True
    return False


# ---------------------------------------------------------------------------------------------
# The operator Deployment


def test_every_operator_setting_is_passed_as_env(render: Render) -> None:
    """Every key of config.ENV_VARS is set by the chart, and nothing else."""
    for values in VALUES_FILES:
        assert set(env(render(values))) == set(ENV_VARS), values.name


def test_the_default_env_equals_the_operator_defaults(render: Render) -> None:
    """With default values the operator gets exactly config.py's defaults (same images)."""
    assert env(render()) == ENV_VARS


def test_custom_values_reach_the_env(render: Render) -> None:
    values = VALUES / "custom-images.yaml"
    got = env(render(values))
    prefix, tag = "mirror.example.internal/kubeserve", "0.1.0-rc1"
    assert got["KUBESERVE_IMAGE_TFSERVING"] == f"{prefix}/tfserving:{tag}"
    assert got["KUBESERVE_IMAGE_TFSERVING_GPU"] == "mirror.example.internal/tfserving:2.18.0-gpu"
    assert got["KUBESERVE_IMAGE_TORCHSERVE"] == f"{prefix}/torchserve:{tag}"
    assert got["KUBESERVE_IMAGE_TORCHSERVE_GPU"] == f"{prefix}/torchserve:{tag}"
    assert got["KUBESERVE_IMAGE_ONNXRUNTIME"] == f"{prefix}/onnxruntime:{tag}"
    assert got["KUBESERVE_IMAGE_ONNXRUNTIME_GPU"].startswith(
        "mirror.example.internal/onnxruntime@sha256:"
    )
    assert got["KUBESERVE_IMAGE_STORAGE_INITIALIZER"] == f"{prefix}/storage-initializer:{tag}"
    assert got["KUBESERVE_IMAGE_PULL_POLICY"] == "Always"
    assert got["KUBESERVE_GPU_PRODUCT_LABEL"] == "example.com/gpu-product"
    assert got["KUBESERVE_GPU_MEMORY_LABEL"] == "example.com/gpu-memory"
    assert got["KUBESERVE_GPU_TAINT_KEY"] == "example.com/gpu"
    assert got["KUBESERVE_PROMETHEUS_URL"] == "http://prometheus.observability.svc:9090"
    assert got["KUBESERVE_CLUSTER_DOMAIN"] == "k8s.example.internal"
    assert got["KUBESERVE_RESYNC_SECONDS"] == "15"
    assert got["KUBESERVE_FIELD_MANAGER"] == "model-operator"


def test_the_env_parses_into_an_operator_config(render: Render) -> None:
    from kubeserve.api import Runtime
    from kubeserve.config import OperatorConfig

    for values in VALUES_FILES:
        cfg = OperatorConfig.from_env(env(render(values)))
        assert cfg.resync_seconds > 0
        assert all(cfg.image(runtime, gpu) for runtime in Runtime for gpu in (False, True))


def test_operator_image_defaults_to_the_app_version(render: Render) -> None:
    assert container(render())["image"] == f"kubeserve/operator:{__version__}"
    custom = container(render(VALUES / "custom-images.yaml"))
    assert custom["image"] == "mirror.example.internal/kubeserve/operator:0.1.0-rc1"
    assert custom["imagePullPolicy"] == "Always"


def test_args_watch_all_namespaces_by_default(render: Render) -> None:
    assert container(render())["args"] == [
        "run",
        "--all-namespaces",
        "--liveness=http://0.0.0.0:8080/healthz",
        "--metrics-port=9090",
        "--log-format=json",
        "--log-level=INFO",
        "--leader-elect",
        "--leader-election-id=kubeserve",
    ]


def test_args_name_each_watched_namespace(render: Render) -> None:
    args = container(render(VALUES / "namespaced.yaml"))["args"]
    assert args[:3] == ["run", "--namespace=team-a", "--namespace=team-b"]
    assert "--all-namespaces" not in args
    assert "--log-format=text" in args and "--log-level=DEBUG" in args


def test_the_args_parse_with_the_real_cli(render: Render) -> None:
    from kubeserve.cli import _parser

    for values in VALUES_FILES:
        args = _parser().parse_args(container(render(values))["args"])
        assert args.liveness.endswith("/healthz")


def test_metrics_off_means_port_zero_and_no_service(render: Render) -> None:
    objects = render(None, "metrics.enabled=false")
    assert "--metrics-port=0" in container(objects)["args"]
    assert of_kind(objects, "Service") == []
    assert [p["name"] for p in container(objects)["ports"]] == ["healthz"]
    policy = one(objects, "NetworkPolicy")
    assert policy["spec"]["ingress"] == []


def test_every_other_env_var_is_the_downward_apis_pod_name_and_namespace(render: Render) -> None:
    for values in VALUES_FILES:
        refs = {
            e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
            for e in container(render(values))["env"]
            if "value" not in e
        }
        assert refs == DOWNWARD_API, values.name


def test_two_replicas_elect_a_leader_and_roll_without_a_gap(render: Render) -> None:
    for values in VALUES_FILES:
        objects = render(values)
        spec = deployment(objects)["spec"]
        assert spec["replicas"] == 2
        # The new pod is up (a standby) before an old one stops and hands over.
        assert spec["strategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
        }
        args = container(objects)["args"]
        assert "--leader-elect" in args
        assert f"--leader-election-id={deployment(objects)['metadata']['name']}" in args
        pdb = one(objects, "PodDisruptionBudget")["spec"]
        assert pdb["maxUnavailable"] == 1
        assert pdb["selector"] == deployment(objects)["spec"]["selector"]


def test_one_replica_has_no_pdb_and_no_anti_affinity(render: Render) -> None:
    objects = render(None, "replicas=1")
    assert deployment(objects)["spec"]["replicas"] == 1
    assert of_kind(objects, "PodDisruptionBudget") == []
    assert "affinity" not in deployment(objects)["spec"]["template"]["spec"]


def test_replicas_spread_over_nodes_unless_the_user_sets_affinity(render: Render) -> None:
    pod = deployment(render())["spec"]["template"]["spec"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    selector = deployment(render())["spec"]["selector"]["matchLabels"]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
    # The user's affinity replaces ours whole (custom-images.yaml sets a node affinity).
    custom = deployment(render(VALUES / "custom-images.yaml"))["spec"]["template"]["spec"]
    assert list(custom["affinity"]) == ["nodeAffinity"]


def test_a_shard_selector_reaches_the_operator_and_parses(render: Render) -> None:
    from kubeserve.cli import _parser

    assert not any(a.startswith("--selector") for a in container(render())["args"])
    args = container(render(None, "selector=kubeserve.io/shard notin (a\\,b)"))["args"]
    assert args[-1] == "--selector=kubeserve.io/shard notin (a,b)"
    assert _parser().parse_args(args).selector == "kubeserve.io/shard notin (a,b)"


def test_probes_use_kopfs_health_endpoint(render: Render) -> None:
    c = container(render())
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"healthz": 8080, "metrics": 9090}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}


def test_the_pod_is_locked_down(render: Render) -> None:
    pod = deployment(render())["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(render())["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in container(render())["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert container(render())["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}


def test_pod_scheduling_values_reach_the_pod(render: Render) -> None:
    objects = render(VALUES / "custom-images.yaml")
    template = deployment(objects)["spec"]["template"]
    pod = template["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["imagePullSecrets"] == [{"name": "mirror-credentials"}]
    assert pod["serviceAccountName"] == "model-operator-sa"
    assert pod["terminationGracePeriodSeconds"] == 60
    assert template["metadata"]["labels"]["team"] == "ml-platform"
    assert template["metadata"]["annotations"]["example.com/scrape"] == "true"
    assert deployment(objects)["metadata"]["name"] == "model-operator"
    sa = one(objects, "ServiceAccount")
    assert sa["metadata"]["name"] == "model-operator-sa"
    assert sa["metadata"]["annotations"] == {"example.com/role": "model-operator"}


def test_the_selector_matches_the_pod(render: Render) -> None:
    for values in VALUES_FILES:
        objects = render(values)
        dep = deployment(objects)
        selector = dep["spec"]["selector"]["matchLabels"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
        for svc in of_kind(objects, "Service"):
            assert svc["spec"]["selector"] == selector
        for policy in of_kind(objects, "NetworkPolicy"):
            assert policy["spec"]["podSelector"]["matchLabels"] == selector


# ---------------------------------------------------------------------------------------------
# Metrics Service, ServiceMonitor, NetworkPolicy


def test_metrics_service(render: Render) -> None:
    svc = one(render(), "Service")
    assert svc["metadata"]["name"] == "kubeserve-metrics"
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]


def test_no_service_monitor_by_default(render: Render) -> None:
    assert of_kind(render(), "ServiceMonitor") == []


def test_service_monitor_behind_a_value(render: Render) -> None:
    objects = render(VALUES / "metrics.yaml")
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    svc = one(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["endpoints"] == [
        {
            "port": "metrics",
            "path": "/metrics",
            "honorLabels": True,  # the per-ModelDeployment series' namespace label
            "interval": "15s",
            "scrapeTimeout": "5s",
        }
    ]
    assert svc["spec"]["ports"][0]["port"] == 9191
    assert "--metrics-port=9191" in container(objects)["args"]


def test_network_policy_admits_only_the_metrics_port(render: Render) -> None:
    policy = one(render(), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress unrestricted
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]
    limited = one(render(VALUES / "metrics.yaml"), "NetworkPolicy")
    assert limited["spec"]["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]


def test_network_policy_can_be_turned_off(render: Render) -> None:
    assert of_kind(render(None, "networkPolicy.enabled=false"), "NetworkPolicy") == []


def test_notes_tell_the_next_command(helm: str) -> None:
    result = run_helm(
        helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client"
    )
    assert "kubectl apply -f examples/onnxruntime.yaml" in result.stdout
    assert "kubectl get md" in result.stdout
    assert f"kubectl logs deploy/{RELEASE} -n {NAMESPACE}" in result.stdout
