"""GPU scheduling: device resources, node affinity from GPU Feature Discovery labels, taints.

The user's own nodeSelector, affinity and tolerations are merged, never overwritten.
"""

from __future__ import annotations

import copy
from typing import Any

from ..api import Gpu, ModelDeployment
from ..config import OperatorConfig


def gpu_resource_name(gpu: Gpu) -> str:
    if gpu.mig_profile:
        return f"nvidia.com/mig-{gpu.mig_profile}"
    return gpu.resource_name


def gpu_resources(gpu: Gpu) -> dict[str, str]:
    # Extended resources must sit in limits; requests must equal them (device plugin rule).
    return {gpu_resource_name(gpu): str(gpu.count)}


def node_requirements(gpu: Gpu, cfg: OperatorConfig) -> list[dict[str, Any]]:
    requirements: list[dict[str, Any]] = []
    if gpu.product:
        requirements.append(
            {"key": cfg.gpu_product_label, "operator": "In", "values": list(gpu.product)}
        )
    if gpu.min_memory_mi_b:
        # Gt is strict; "at least N MiB" is Gt N-1.
        requirements.append(
            {
                "key": cfg.gpu_memory_label,
                "operator": "Gt",
                "values": [str(gpu.min_memory_mi_b - 1)],
            }
        )
    return requirements


def affinity(md: ModelDeployment, cfg: OperatorConfig) -> dict[str, Any] | None:
    user = copy.deepcopy(md.spec.affinity) if md.spec.affinity else None
    requirements = node_requirements(md.spec.gpu, cfg) if md.spec.gpu else []
    if not requirements:
        return user
    merged = user or {}
    node_affinity = merged.setdefault("nodeAffinity", {})
    required = node_affinity.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    terms = required.get("nodeSelectorTerms") or [{}]
    # Terms are ORed, expressions inside a term ANDed: the GPU rule must hold in every term.
    required["nodeSelectorTerms"] = [
        {**term, "matchExpressions": [*term.get("matchExpressions", []), *requirements]}
        for term in terms
    ]
    return merged


def tolerations(md: ModelDeployment, cfg: OperatorConfig) -> list[dict[str, Any]]:
    user = [t.model_dump(by_alias=True, exclude_none=True) for t in md.spec.tolerations or []]
    if not md.spec.gpu:
        return user
    gpu_toleration = {"key": cfg.gpu_taint_key, "operator": "Exists", "effect": "NoSchedule"}
    if gpu_toleration in user:
        return user
    return [*user, gpu_toleration]
