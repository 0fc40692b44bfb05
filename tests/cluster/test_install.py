"""Installing kubeserve on a real API server: the chart, the CRD, kubectl's view of it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cluster_env import CHART, OPERATOR_NAMESPACE, ROOT, model_deployment
from e2elib import Kube as Tools
from kubeapi import Kube

CRD = "modeldeployments.kubeserve.io"


def test_the_readme_helm_install_installs_the_crd_and_least_privilege_rbac(
    installed: Tools, kube: Kube
) -> None:
    crd = kube.get("apiextensions.k8s.io/v1", "customresourcedefinitions", None, CRD)
    established = next(c for c in crd["status"]["conditions"] if c["type"] == "Established")
    assert established["status"] == "True"

    # The operator's identity may do what it needs and nothing more: a quick sample.
    def can(verb: str, resource: str, *extra: str) -> bool:
        result = installed.kubectl(
            "auth", "can-i", verb, resource, "-A", *extra,
            f"--as=system:serviceaccount:{OPERATOR_NAMESPACE}:kubeserve", check=False,
        )  # fmt: skip
        return result.stdout.strip() == "yes"

    assert can("patch", "deployments.apps") and can("watch", "modeldeployments.kubeserve.io")
    assert can("patch", "modeldeployments.kubeserve.io", "--subresource=status")
    assert not can("patch", "modeldeployments.kubeserve.io")
    assert not can("get", "secrets") and not can("delete", "nodes")


def test_the_crds_folder_and_the_generator_apply_to_a_real_api_server(installed: Tools) -> None:
    # The generated schema had a JSON-Schema-2020 exclusiveMinimum that every API server
    # refused; a dry run is judged by the same validation as a create.
    installed.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    generated = subprocess.run(
        [sys.executable, "-m", "kubeserve", "crd"], capture_output=True, text=True, check=True
    ).stdout
    installed.kubectl("apply", "--dry-run=server", "-f", "-", input=generated)
    chart_copy = CHART / "crds" / f"{CRD}.yaml"
    assert chart_copy.read_text() == (ROOT / "crds" / f"{CRD}.yaml").read_text()


def test_kubectl_get_columns_and_explain(installed: Tools, namespace: str) -> None:
    installed.apply(model_deployment("shown", namespace))
    out = installed.kubectl("get", "md", "-n", namespace).stdout.splitlines()
    assert out[0].split() == ["NAME", "RUNTIME", "READY", "REPLICAS", "URL", "CANARY", "AGE"]
    assert out[1].split()[:2] == ["shown", "onnxruntime"]
    explained = installed.kubectl("explain", "modeldeployment.spec.gpu.migProfile").stdout
    assert "MIG" in explained
    explained = installed.kubectl("explain", "md.spec.autoscaling.metrics.target").stdout
    assert "Target per pod" in explained


def test_helm_upgrade_and_uninstall_a_second_release(installed: Tools, kube: Kube) -> None:
    ns = "ks-second"
    kube.create(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}, "namespaces"
    )
    installed.helm(
        "install",
        "second",
        str(CHART),
        "-n",
        ns,
        "--create-namespace",
        "--set",
        "watchNamespaces={team-a}",
        "--set",
        "operator.logLevel=INFO",
    )
    installed.helm(
        "upgrade",
        "second",
        str(CHART),
        "-n",
        ns,
        "--reuse-values",
        "--set",
        "operator.logLevel=DEBUG",
    )

    deploy = kube.get("apps/v1", "deployments", ns, "second-kubeserve")
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--log-level=DEBUG" in args and "--namespace=team-a" in args
    assert kube.get("rbac.authorization.k8s.io/v1", "roles", "team-a", "second-kubeserve")
    installed.helm("uninstall", "second", "-n", ns, "--wait")
    assert kube.get("apps/v1", "deployments", ns, "second-kubeserve") is None
    assert kube.get("rbac.authorization.k8s.io/v1", "roles", "team-a", "second-kubeserve") is None
    # Helm never deletes CRDs (nor the ModelDeployments they hold) on uninstall.
    assert kube.get("apiextensions.k8s.io/v1", "customresourcedefinitions", None, CRD)
    for name in (ns, "team-a"):
        kube.delete("v1", "namespaces", None, name)


def test_the_chart_with_every_option_passes_the_real_schemas(
    installed: Tools, third_party_crds: Path
) -> None:
    # A server-side dry run: admission and the ServiceMonitor's real CRD judge every object.
    installed.helm(
        "install", "options", str(CHART), "-n", "default", "--dry-run=server",
        "--set", "metrics.serviceMonitor.enabled=true", "--set", "networkPolicy.enabled=true",
    )  # fmt: skip
