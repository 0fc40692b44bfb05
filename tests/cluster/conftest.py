"""The real-control-plane session: a control plane, simulated nodes, the chart, the operator.

Once per test session: etcd, kube-apiserver, kube-controller-manager and kube-scheduler
start (envtest.py), the node simulator registers nodes (nodesim.py), the README's
``helm install`` installs the chart, and ``kubeserve run -A`` runs as a process under the
chart's own ServiceAccount, so a missing RBAC rule is a 403 and a failed test.

Without ``$KUBEBUILDER_ASSETS`` every test here skips with one reason (or fails, with
``KUBESERVE_CLUSTER_REQUIRED=1``, as CI sets). Tests that need the
controller manager or the scheduler skip, saying so, when the assets hold only
kube-apiserver and etcd (as setup-envtest's do).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_env import (
    CHART,
    OPERATOR_NAMESPACE,
    RELEASE,
    REQUIRED_ENV,
    RESTRICTED,
    Operator,
    Tools,
    service_account_kubeconfig,
    tool,
)
from envtest import THIRD_PARTY_CRDS_ENV, ControlPlane, find_assets
from kubeapi import Kube, eventually
from nodesim import NodeSimulator, SimNode, gpu_node

# Nodes every test can use; GPU tests add their own with products no other test names.
SESSION_NODES = (
    SimNode("cpu-1"),
    SimNode("cpu-2"),
    gpu_node("gpu-l4", "NVIDIA-L4", count=4, memory_mib=23034),
    gpu_node("gpu-a100-mig", "NVIDIA-A100-SXM4-80GB", mig={"1g.10gb": 7, "3g.40gb": 2}),
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/cluster" in str(item.fspath):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    assets = find_assets()
    if isinstance(assets, str):
        if os.environ.get(REQUIRED_ENV) == "1":
            pytest.fail(f"{assets} ({REQUIRED_ENV}=1)")
        pytest.skip(assets)
    plane = ControlPlane(assets, tmp_path_factory.mktemp("envtest"))
    plane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kube(control_plane: ControlPlane) -> Kube:
    plane = control_plane
    return Kube(plane.url, str(plane.ca.pair.cert), (str(plane.admin.cert), str(plane.admin.key)))


@pytest.fixture(scope="session")
def tools(control_plane: ControlPlane) -> Tools:
    kubectl, helm = tool("kubectl"), tool("helm")
    if kubectl is None or helm is None:
        pytest.fail("kubectl and helm are needed: `make setup` installs both into .venv")
    return Tools(kubectl, helm, control_plane.admin_kubeconfig)


@pytest.fixture(scope="session")
def controllers(control_plane: ControlPlane) -> None:
    """Tests that need Deployments turned into pods, or garbage collection."""
    if not control_plane.has_controller_manager:
        pytest.skip("needs kube-controller-manager in $KUBEBUILDER_ASSETS (envtest has none)")


@pytest.fixture(scope="session")
def scheduler(control_plane: ControlPlane, controllers: None) -> None:
    if not control_plane.has_scheduler:
        pytest.skip("needs kube-scheduler in $KUBEBUILDER_ASSETS (envtest has none)")


@pytest.fixture(scope="session")
def nodes(kube: Kube, control_plane: ControlPlane) -> Iterator[NodeSimulator]:
    simulator = NodeSimulator(kube)
    for node in SESSION_NODES:
        simulator.add(node)
    simulator.start()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture(scope="session")
def third_party_crds(tools: Tools) -> Path:
    """Gateway API, KEDA and Prometheus Operator CRDs, installed as those projects do."""
    folder = os.environ.get(THIRD_PARTY_CRDS_ENV)
    if not folder or not Path(folder).is_dir():
        pytest.skip(f"needs ${THIRD_PARTY_CRDS_ENV}: a folder of third-party CRDs")
    tools.kubectl("apply", "--server-side", "-f", folder, timeout=120)
    tools.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    return Path(folder)


@pytest.fixture(scope="session")
def installed(tools: Tools, nodes: NodeSimulator, kube: Kube, control_plane: ControlPlane) -> Tools:
    """The README's first cluster command, as a user runs it."""
    tools.helm("install", RELEASE, str(CHART), "-n", OPERATOR_NAMESPACE, "--create-namespace")
    tools.kubectl(
        "wait", "--for=condition=Established", "crd/modeldeployments.kubeserve.io",
        "--timeout=60s",
    )  # fmt: skip
    if control_plane.has_controller_manager:
        _await_garbage_collection_of_the_crd(kube)
    return tools


def _await_garbage_collection_of_the_crd(kube: Kube) -> None:
    """The garbage collector learns a new CRD at its next discovery sync, up to 30 s later.

    Until then children of a deleted ModelDeployment stay. Waiting once here, for a probe
    object's child to be collected, keeps every test's own bound tight and meaningful.
    """
    probe = kube.create(
        {"apiVersion": "kubeserve.io/v1alpha1", "kind": "ModelDeployment",
         "metadata": {"name": "gc-probe", "namespace": "default"},
         "spec": {"runtime": "onnxruntime", "model": {"uri": "s3://models/probe/"}}},
        "modeldeployments",
    )  # fmt: skip
    kube.create(
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "gc-probe", "namespace": "default", "ownerReferences": [
             {"apiVersion": "kubeserve.io/v1alpha1", "kind": "ModelDeployment",
              "name": "gc-probe", "uid": probe["metadata"]["uid"]}]}},
        "configmaps",
    )  # fmt: skip
    kube.delete("kubeserve.io/v1alpha1", "modeldeployments", "default", "gc-probe")
    eventually(
        lambda: kube.get("v1", "configmaps", "default", "gc-probe") is None,
        timeout=90,
        what="the garbage collector to know ModelDeployments",
    )


@pytest.fixture(scope="session")
def operator(
    installed: Tools, control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    """The operator under the chart's RBAC: a token of the chart's ServiceAccount."""
    config = service_account_kubeconfig(installed, control_plane, "operator")
    running = Operator(config, tmp_path_factory.mktemp("operator"))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def session_operator_paused(operator: Operator) -> Iterator[None]:
    """The session's operator stops while a test runs one of its own (one owner at a time)."""
    operator.stop()
    try:
        yield
    finally:
        operator.start()


@pytest.fixture
def namespace(kube: Kube, tools: Tools, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace that enforces Pod Security "restricted" for what we generate."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.create(
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": name, "labels": dict(RESTRICTED)}},
        "namespaces",
    )  # fmt: skip
    yield name
    if request.node.stash.get(FAILED, False):
        print(tools.diagnose(name, OPERATOR_NAMESPACE))
        if "operator" in request.fixturenames:
            running: Operator = request.getfixturevalue("operator")
            print("--- operator log, this namespace and errors")
            for line in running.log_text().splitlines():
                if name in line or "ERROR" in line or "Traceback" in line:
                    print(line)
    kube.delete("v1", "namespaces", None, name)


FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[FAILED] = True
    return report
