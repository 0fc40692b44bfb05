"""The Service clients call. Only ports a runtime marks as public are exposed."""

from __future__ import annotations

from typing import Any

from ..api import ModelDeployment
from ..config import OperatorConfig
from ..runtimes import runtime_for
from .labels import metadata, selector_labels
from .names import child_name

HTTP_PORT = 8080


def service(md: ModelDeployment) -> dict[str, Any]:
    ports = [
        {"name": p.name, "port": p.service_port, "targetPort": p.name, "protocol": "TCP"}
        for p in runtime_for(md.spec.runtime).ports
        if p.service_port is not None
    ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(md, child_name(md.name)),
        "spec": {"type": "ClusterIP", "selector": selector_labels(md), "ports": ports},
    }


def url(md: ModelDeployment, cfg: OperatorConfig) -> str:
    return f"http://{child_name(md.name)}.{md.namespace}.svc.{cfg.cluster_domain}:{HTTP_PORT}"
