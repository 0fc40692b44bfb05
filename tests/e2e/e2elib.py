"""Helpers for the kind e2e suite: running tools, bounded waits, port-forwards, HTTP.

Every wait here has a deadline and reports what it last saw; nothing polls forever.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CHART = ROOT / "charts" / "kubeserve"
KIND_CONFIG = HERE / "kind-config.yaml"

T = TypeVar("T")

IMAGES = ("operator", "onnxruntime", "tfserving", "torchserve", "storage-initializer")
RELEASE = "kubeserve"
OPERATOR_NAMESPACE = "kubeserve"
NAMESPACE = "kubeserve-e2e"
MODELS_PVC = "models"
LOADER_POD = "model-loader"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


class CommandFailed(AssertionError):
    pass


def run(
    args: Sequence[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a deadline; on failure raise with its output."""
    try:
        result = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            input=input,
        )
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"timed out after {timeout:g} s: {' '.join(args)}") from exc
    if check and result.returncode != 0:
        raise CommandFailed(
            f"exit {result.returncode}: {' '.join(args)}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result


def tool(name: str) -> str | None:
    """A CLI from this venv (kubectl, helm from PyPI packages) or else from PATH."""
    candidate = Path(sys.prefix) / "bin" / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which(name)


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 2.0,
) -> T:
    """Call ``probe`` until it returns something truthy, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except (CommandFailed, urllib.error.URLError, ConnectionError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what}; last: {last!r}"
            )
        time.sleep(interval)


@dataclass
class Kube:
    """kubectl and helm against one cluster (its own kubeconfig file)."""

    kubectl_bin: str
    helm_bin: str
    kubeconfig: Path
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env}

    def kubectl(
        self, *args: str, timeout: float = 120, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run(
            [self.kubectl_bin, *args], timeout=timeout, env=self.env, check=check, input=input
        )

    def helm(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run([self.helm_bin, *args], timeout=timeout, env=self.env)

    def apply(self, manifest: dict[str, Any] | list[dict[str, Any]]) -> None:
        docs = manifest if isinstance(manifest, list) else [manifest]
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
        self.kubectl("apply", "-f", "-", input=body)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        args = ["get", kind, name, "-o", "json", "--ignore-not-found"]
        if namespace:
            args += ["-n", namespace]
        out = self.kubectl(*args).stdout.strip()
        return json.loads(out) if out else None

    def names(self, kinds: str, namespace: str, selector: str) -> list[str]:
        out = self.kubectl("get", kinds, "-n", namespace, "-l", selector, "-o", "name").stdout
        return sorted(line for line in out.splitlines() if line.strip())

    def condition(self, obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
        for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
            if cond.get("type") == kind:
                result: dict[str, Any] = cond
                return result
        return None

    def wait_ready(self, name: str, namespace: str, timeout: int = 300) -> dict[str, Any]:
        """`kubectl wait --for=condition=Ready md/NAME`, then the object."""
        self.kubectl(
            "wait",
            "--for=condition=Ready",
            f"md/{name}",
            "-n",
            namespace,
            f"--timeout={timeout}s",
            timeout=timeout + 30,
        )
        md = self.get("md", name, namespace)
        assert md is not None
        return md

    def diagnose(self, namespace: str, operator_namespace: str) -> str:
        """What a human looks at when a step fails: objects, events, operator logs."""
        parts = []
        for args in (
            [
                "get",
                "md,deploy,rs,pod,svc,cm,hpa,pdb,networkpolicy,pvc",
                "-n",
                namespace,
                "-o",
                "wide",
            ],
            ["describe", "md", "-n", namespace],
            ["get", "events", "-n", namespace, "--sort-by=.lastTimestamp"],
            ["get", "pods", "-n", operator_namespace, "-o", "wide"],
            ["logs", "deploy/kubeserve", "-n", operator_namespace, "--tail=200"],
        ):
            result = self.kubectl(*args, check=False, timeout=60)
            parts.append(f"$ kubectl {' '.join(args)}\n{result.stdout}{result.stderr}")
        return "\n".join(parts)


@contextlib.contextmanager
def port_forward(
    kube: Kube, target: str, namespace: str, port: int, timeout: float = 60
) -> Iterator[int]:
    """`kubectl port-forward TARGET :PORT`; yields the local port, always stops the process."""
    proc = subprocess.Popen(
        [
            kube.kubectl_bin,
            "port-forward",
            "-n",
            namespace,
            target,
            f":{port}",
            "--address=127.0.0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=kube.env,
    )
    try:
        deadline = time.monotonic() + timeout
        local_port = None
        assert proc.stdout is not None
        while local_port is None:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(f"port-forward to {target} did not start (exit {proc.poll()})")
            line = proc.stdout.readline()
            match = re.search(r"Forwarding from 127\.0\.0\.1:(\d+)", line)
            if match:
                local_port = int(match.group(1))
        yield local_port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def http_json(url: str, body: Any | None = None, timeout: float = 30) -> Any:
    """GET (no body) or POST JSON; the decoded JSON response."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"} if data else {}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def close_to(got: Sequence[float], want: Sequence[float], tol: float = 1e-4) -> bool:
    return len(got) == len(want) and all(abs(g - w) <= tol for g, w in zip(got, want, strict=True))


def flatten(values: Any) -> list[float]:
    if isinstance(values, list):
        return [x for item in values for x in flatten(item)]
    return [float(values)]


@dataclass
class Env:
    """The e2e session: the cluster's tools and the image tag under test."""

    kube: Kube
    tag: str
    cluster: str
