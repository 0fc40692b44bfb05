"""What the real-control-plane tests share: names, the operator process, ModelDeployment helpers.

conftest.py holds the fixtures; this module the plain code the test files import.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from envtest import ControlPlane, free_port
from kubeapi import Kube, condition, eventually

ROOT = Path(__file__).resolve().parents[2]
# The kind suite's kubectl/helm wrapper serves here unchanged.
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from e2elib import Kube as Tools  # noqa: E402
from e2elib import tool  # noqa: E402

CHART = ROOT / "charts" / "kubeserve"
# CI sets it: a machine meant to run this suite must not pass it by skipping.
REQUIRED_ENV = "KUBESERVE_CLUSTER_REQUIRED"
RELEASE = OPERATOR_NAMESPACE = "kubeserve"
SERVICE_ACCOUNT = "kubeserve"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
__all__ = ["Tools", "tool"]


class Operator:
    """``kubeserve run -A`` as a process, logged in with a kubeconfig of our choosing."""

    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        env: dict[str, str] | None = None,
        args: Sequence[str] = (),
        name: str = "operator",
    ) -> None:
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.extra_env = env or {}
        self.extra_args = list(args)  # after `run -A`, e.g. --leader-elect
        self.name = name  # several in one workdir keep apart logs
        self.popen: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.metrics_port = free_port()  # the same across restarts: Prometheus scrapes it

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}-{self.runs}.log"

    def start(self) -> None:
        self.runs += 1
        port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "ORT_DISABLE_TELEMETRY": "1",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "kubeserve", "run", "-A",
                 f"--metrics-port={self.metrics_port}",
                 f"--liveness=http://127.0.0.1:{port}/healthz", *self.extra_args],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip

        def healthy() -> bool:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise AssertionError(f"the operator exited:\n{self.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    return True
            except OSError:
                return False

        eventually(healthy, timeout=60, what="the operator's /healthz")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.popen is None or self.popen.poll() is not None:
            return None if self.popen is None else self.popen.returncode
        os.killpg(self.popen.pid, sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
            raise AssertionError(f"the operator ignored signal {sig} for {timeout}s") from None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def service_account_kubeconfig(tools: Tools, plane: ControlPlane, name: str) -> Path:
    token = tools.kubectl(
        "create", "token", SERVICE_ACCOUNT, "-n", OPERATOR_NAMESPACE, "--duration=4h"
    ).stdout.strip()
    return plane.write_token_kubeconfig(name, token)


MD_API = "kubeserve.io/v1alpha1"


def model_deployment(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": MD_API,
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"runtime": "onnxruntime", "model": {"uri": "s3://models/mnist/"}, **spec},
    }


def md(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = kube.get(MD_API, "modeldeployments", namespace, name)
    return found


def ready_at_generation(kube: Kube, namespace: str, name: str, timeout: float = 60) -> Any:
    """The ModelDeployment once Ready for its latest generation (bounded)."""

    def check() -> dict[str, Any] | None:
        obj = md(kube, namespace, name)
        done = (condition(obj, "Ready") or {}).get("status") == "True"
        observed = ((obj or {}).get("status") or {}).get("observedGeneration")
        return obj if obj and done and observed == obj["metadata"]["generation"] else None

    return eventually(check, timeout=timeout, what=f"md/{name} Ready at its generation")
