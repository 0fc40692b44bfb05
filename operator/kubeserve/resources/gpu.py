"""GPU scheduling: device resources, node affinity from GPU Feature Discovery labels, taints.

The user's own nodeSelector, affinity and tolerations are merged, never overwritten:

- nodeSelector is the user's alone (GPU selection uses node affinity, so nothing collides);
- the GPU node requirements are ANDed into every required nodeSelectorTerm the user wrote
  (terms are ORed, expressions inside a term ANDed, so the GPU rule must hold in each);
  preferred terms and pod (anti-)affinity are kept as they are;
- the toleration for the GPU taint is appended unless a user toleration already covers it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ..api import Gpu, ModelDeployment
from ..config import OperatorConfig

MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
GPU_TAINT_EFFECT = "NoSchedule"


def gpu_resource_name(gpu: Gpu) -> str:
    """The extended resource to request: a MIG slice (mixed strategy) or whole devices.

    The NVIDIA device plugin advertises a profile's ``+`` as ``.``: 1g.10gb+me is
    nvidia.com/mig-1g.10gb.me (``+`` is not allowed in a resource name).
    """
    if gpu.mig_profile:
        return MIG_RESOURCE_PREFIX + gpu.mig_profile.replace("+", ".")
    return gpu.resource_name


def gpu_resources(gpu: Gpu) -> dict[str, str]:
    # Extended resources cannot be overcommitted: they go into limits, and requests, if
    # set, must equal them. deployment.py puts this same mapping into both.
    return {gpu_resource_name(gpu): str(gpu.count)}


def node_requirements(gpu: Gpu, cfg: OperatorConfig) -> list[dict[str, Any]]:
    """NodeSelectorRequirements on GPU Feature Discovery labels (keys from the config)."""
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
    """The pod's affinity: the user's, with the GPU node requirements ANDed in."""
    user = copy.deepcopy(md.spec.affinity) if md.spec.affinity else None
    requirements = node_requirements(md.spec.gpu, cfg) if md.spec.gpu else []
    if not requirements:
        return user
    merged: dict[str, Any] = user or {}
    node_affinity = dict(merged.get("nodeAffinity") or {})
    required = dict(node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or [{}]
    required["nodeSelectorTerms"] = [
        {**term, "matchExpressions": [*(term.get("matchExpressions") or []), *requirements]}
        for term in terms
    ]
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = required
    merged["nodeAffinity"] = node_affinity
    return merged


def gpu_tolerations(gpu: Gpu, cfg: OperatorConfig) -> list[dict[str, Any]]:
    """Tolerations for the taints GPU node pools usually carry, any value.

    The configured key (nvidia.com/gpu by default: GKE, EKS and most GPU Operator setups
    taint NVIDIA nodes with it); for another vendor's device, also the resource name, the
    Kubernetes convention for tainting nodes that offer an extended resource.
    """
    keys = [cfg.gpu_taint_key]
    if not gpu.resource_name.startswith("nvidia.com/") and gpu.resource_name not in keys:
        keys.append(gpu.resource_name)
    return [{"key": key, "operator": "Exists", "effect": GPU_TAINT_EFFECT} for key in keys]


def tolerations(md: ModelDeployment, cfg: OperatorConfig) -> list[dict[str, Any]]:
    user = [t.model_dump(by_alias=True, exclude_none=True) for t in md.spec.tolerations or []]
    if not md.spec.gpu:
        return user
    added = [
        toleration
        for toleration in gpu_tolerations(md.spec.gpu, cfg)
        if not any(_covers(t, toleration["key"]) for t in user)
    ]
    return [*user, *added]


def _covers(toleration: Mapping[str, Any], key: str) -> bool:
    """Whether a toleration already tolerates ``key`` with any value and effect NoSchedule."""
    return (
        toleration.get("operator") == "Exists"
        and toleration.get("key") in (None, "", key)
        and toleration.get("effect") in (None, "", GPU_TAINT_EFFECT)
    )
