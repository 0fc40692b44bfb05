"""The small interface every serving runtime implements.

A runtime knows its server container (image variant, args, ports, probes), the config files
it reads, the model layout it expects and where its metrics live. Everything else about the
pod (storage, security, scheduling) is shared and lives in ``resources/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..api import MetricType, ModelDeployment, Runtime

MODEL_DIR = "/mnt/models"
CONFIG_DIR = "/etc/kubeserve"
SERVER_CONTAINER = "server"


@dataclass(frozen=True)
class Port:
    name: str
    container_port: int
    # The port the Service exposes; None keeps the port inside the pod.
    service_port: int | None


@dataclass(frozen=True)
class MetricsEndpoint:
    port: str
    path: str


@dataclass(frozen=True)
class PromSeries:
    """A per-pod Prometheus expression for a runtime-native autoscaling signal.

    ``query`` is a PromQL template: ``{selector}`` is replaced with the label matchers that
    pick this ModelDeployment's pods, so the same text serves KEDA and prometheus-adapter.
    """

    metric_name: str
    query: str


@dataclass(frozen=True)
class BuildContext:
    image: str
    gpu: bool
    image_pull_policy: str
    # Whole CPUs of the server container's CPU limit, rounded up (kubeserve.cpu); None without
    # a limit, when the runtimes keep their own thread defaults.
    cpu_budget: int | None = None


class ServingRuntime(Protocol):
    @property
    def runtime(self) -> Runtime: ...

    @property
    def ports(self) -> tuple[Port, ...]:
        """Container ports; those with a service_port are exposed by the Service."""
        ...

    @property
    def metrics(self) -> MetricsEndpoint: ...

    @property
    def model_layout(self) -> str:
        """What the model directory must contain, for docs and error messages."""
        ...

    def container(self, md: ModelDeployment, ctx: BuildContext) -> dict[str, Any]:
        """The server container, without resources, security context or volume mounts.

        Only ``args``, never ``command``: the image's entrypoint (tini, then the server)
        stays in charge, so SIGTERM reaches servers that do not handle it as PID 1.
        """
        ...

    def config_files(self, md: ModelDeployment, ctx: BuildContext) -> Mapping[str, str]:
        """Files mounted read-only at CONFIG_DIR (from a ConfigMap); empty for none."""
        ...

    def series(self, metric: MetricType) -> PromSeries | None:
        """The runtime's own Prometheus series for a native autoscaling metric."""
        ...


def container_ports(ports: tuple[Port, ...]) -> list[dict[str, Any]]:
    return [{"name": p.name, "containerPort": p.container_port, "protocol": "TCP"} for p in ports]


def http_probe(path: str, port: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def tcp_probe(port: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "tcpSocket": {"port": port},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def startup_probe(probe: dict[str, Any]) -> dict[str, Any]:
    # Model downloads happen in the init container; loading big models can still take
    # minutes, so liveness waits for the startup probe instead of killing a loading server.
    return {**probe, "periodSeconds": 5, "failureThreshold": 120}
