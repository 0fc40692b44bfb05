"""Gateway API children: the stable-only and canary-only Services, the HTTPRoute and the
GRPCRoute (gateway.networking.k8s.io/v1) with exact weights and the RequestMirror filter.

Pure builders, not yet called by render() (docs/rollouts.md). The weights are an argument:
the controller sets the canary's share only once its pods are Ready, so a builder never
decides what traffic a pod may take.
"""

from __future__ import annotations

from typing import Any

from ..api import ModelDeployment
from ..config import OperatorConfig
from ..runtimes import runtime_for
from .labels import CANARY, STABLE, metadata, selector_labels
from .labels import TRACK_LABEL as TRACK_LABEL
from .names import child_name

GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"
GRPC_PORT_NAME = "grpc"
HTTP_PORT_NAME = "http"
MIRROR_NEEDS_GATEWAY = (
    "canary.mirror needs a Gateway: set spec.gateway, or ask your operator admin for a "
    "default (KUBESERVE_GATEWAY). Without the Gateway API a copy of a request cannot be "
    "sent and its answer dropped; the canary is not created"
)


def parent_ref(md: ModelDeployment, cfg: OperatorConfig) -> dict[str, str] | None:
    """The route's parentRef: spec.gateway, else the operator's default, else None."""
    own = md.spec.gateway
    if own is not None:
        ref = {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": own.name,
            "namespace": own.namespace or md.namespace,
        }
        if own.section_name:
            ref["sectionName"] = own.section_name
        return ref
    if cfg.gateway is not None:
        namespace, name = cfg.gateway
        return {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": name,
            "namespace": namespace,
        }
    return None


def mirror_problem(md: ModelDeployment, cfg: OperatorConfig) -> str | None:
    """Why the canary cannot run as asked, or None. Not a CEL rule: the operator's default
    Gateway is invisible to the API server, so this is judged here, into CanaryReady=False."""
    canary = md.spec.canary
    if canary is not None and canary.mirror and parent_ref(md, cfg) is None:
        return MIRROR_NEEDS_GATEWAY
    return None


def _service_ports(md: ModelDeployment) -> list[dict[str, Any]]:
    return [
        {"name": p.name, "port": p.service_port, "targetPort": p.name, "protocol": "TCP"}
        for p in runtime_for(md.spec.runtime).ports
        if p.service_port is not None
    ]


def track_service(md: ModelDeployment, track: str) -> dict[str, Any]:
    """``<name>-stable`` or ``<name>-canary``: one track's pods, for a route's backendRefs."""
    if track not in (STABLE, CANARY):
        raise ValueError(f"unknown track {track!r}")
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(md, child_name(md.name, track)),
        "spec": {
            "type": "ClusterIP",
            "selector": {**selector_labels(md), TRACK_LABEL: track},
            "ports": _service_ports(md),
        },
    }


def _port(md: ModelDeployment, name: str) -> int | None:
    for port in runtime_for(md.spec.runtime).ports:
        if port.name == name and port.service_port is not None:
            return port.service_port
    return None


def _rule(md: ModelDeployment, port: int, canary_percent: int, mirror: bool) -> dict[str, Any]:
    def backend(track: str, weight: int | None = None) -> dict[str, Any]:
        ref: dict[str, Any] = {"name": child_name(md.name, track), "port": port}
        if weight is not None:
            ref["weight"] = weight
        return ref

    rule: dict[str, Any]
    if mirror or canary_percent == 0:
        rule = {"backendRefs": [backend(STABLE, 1)]}
        if mirror and canary_percent > 0:
            rule["filters"] = [
                {
                    "type": "RequestMirror",
                    "requestMirror": {"backendRef": backend(CANARY), "percent": canary_percent},
                }
            ]
        return rule
    if canary_percent >= 100:
        return {"backendRefs": [backend(CANARY, 1)]}
    return {"backendRefs": [backend(STABLE, 100 - canary_percent), backend(CANARY, canary_percent)]}


def _route(
    md: ModelDeployment,
    cfg: OperatorConfig,
    kind: str,
    port: int,
    canary_percent: int,
    mirror: bool,
) -> dict[str, Any] | None:
    parent = parent_ref(md, cfg)
    if parent is None:
        return None
    if not 0 <= canary_percent <= 100:
        raise ValueError(f"canary_percent {canary_percent} is not 0-100")
    spec: dict[str, Any] = {
        "parentRefs": [parent],
        "rules": [_rule(md, port, canary_percent, mirror)],
    }
    if md.spec.gateway and md.spec.gateway.hostnames:
        spec["hostnames"] = list(md.spec.gateway.hostnames)
    return {
        "apiVersion": GATEWAY_API_VERSION,
        "kind": kind,
        "metadata": metadata(md, child_name(md.name)),
        "spec": spec,
    }


def http_route(
    md: ModelDeployment, cfg: OperatorConfig, *, canary_percent: int = 0, mirror: bool = False
) -> dict[str, Any] | None:
    """The HTTPRoute to the HTTP port; None without a parent Gateway.

    ``canary_percent`` is the share in effect (the controller's decision, 0 until the canary
    is Ready): weights stable 100 - p / canary p, or with ``mirror`` every request to stable
    and p % copied to the canary by the RequestMirror filter (its answers are dropped).
    """
    port = _port(md, HTTP_PORT_NAME)
    assert port is not None, f"runtime {md.spec.runtime} has no http port"
    return _route(md, cfg, "HTTPRoute", port, canary_percent, mirror)


def grpc_route(
    md: ModelDeployment, cfg: OperatorConfig, *, canary_percent: int = 0, mirror: bool = False
) -> dict[str, Any] | None:
    """The GRPCRoute to the gRPC port, the same split; None without a parent Gateway or when
    the runtime serves no gRPC (torchserve's gRPC ports are not exposed)."""
    port = _port(md, GRPC_PORT_NAME)
    if port is None:
        return None
    return _route(md, cfg, "GRPCRoute", port, canary_percent, mirror)
