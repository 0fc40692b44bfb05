"""An optional NetworkPolicy that admits ingress only to the server's ports."""

from __future__ import annotations

from typing import Any

from ..api import ModelDeployment
from ..runtimes import runtime_for
from .labels import metadata, selector_labels
from .names import child_name


def network_policy(md: ModelDeployment) -> dict[str, Any] | None:
    policy = md.spec.network_policy
    if policy is None or not policy.enabled:
        return None
    ports = [
        {"protocol": "TCP", "port": p.name}
        for p in runtime_for(md.spec.runtime).ports
        if p.service_port is not None
    ]
    # Default peer: any pod in this namespace (an empty podSelector).
    peers = list(policy.from_) if policy.from_ else [{"podSelector": {}}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(md, child_name(md.name)),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(md)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": ports}],
        },
    }
