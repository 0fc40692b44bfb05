"""The canary's children: its Deployment and ConfigMap, its pod labels, and its size.

Pure builders, not yet called by render(): the controller that moves traffic, promotes and
rolls back (docs/rollouts.md) is the next step. The canary is the stable ModelDeployment with
the canary's model, image, env, resources and replica count put in (``canary_view``), so it
inherits everything else (runtime, GPU, batching, threads) by construction.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..api import ModelDeployment
from ..config import OperatorConfig
from .configmap import config_map
from .deployment import config_map_data, deployment
from .labels import CANARY, STABLE, TRACK_LABEL, selector_labels
from .names import child_name

__all__ = ["CANARY", "STABLE", "TRACK_LABEL"]


def canary_name(md: ModelDeployment) -> str:
    """The canary Deployment's, ConfigMap's and Service's name."""
    return child_name(md.name, CANARY)


def canary_view(md: ModelDeployment) -> ModelDeployment:
    """``md`` as the canary runs it: the canary's fields replace the stable's.

    The model keeps the stable's served name (api.py refuses another), env and resources
    replace the stable's when set, the Deployment is never autoscaled (the operator sizes
    it) and keeps the GPU-safe default rollout.
    """
    canary = md.spec.canary
    if canary is None:
        raise ValueError(f"{md.namespace}/{md.name} has no spec.canary")
    model = canary.model.model_copy(update={"name": canary.model.name or md.spec.model.name})
    spec = md.spec.model_copy(
        update={
            "model": model,
            "image": canary.image or md.spec.image,
            "env": canary.env if canary.env is not None else md.spec.env,
            "resources": canary.resources if canary.resources is not None else md.spec.resources,
            "replicas": canary.replicas or 1,
            "autoscaling": None,
            "rollout": None,
            "canary": None,
        }
    )
    return md.model_copy(update={"spec": spec})


def canary_replicas(stable_replicas: int, percent: int) -> int:
    """Canary pods whose share of all ready pods is closest to ``percent`` (no Gateway).

    Without a Gateway the Service spreads connections over every ready pod of both tracks,
    so the canary's share is canary / (stable + canary). The count is the one of 1..stable
    whose share is nearest the percent, ties to the smaller: 9 stable at 10 % -> 1 (exactly
    10 %); 4 stable at 10 % -> 1 (20 %, the least a canary pod can take); 3 stable at 50 %
    -> 3. Never more than the stable's count: the canary is the smaller track (with GPUs,
    twice the pods would need twice the GPUs), so the approximate split tops out at 50 %.
    0 % or no stable pods: no canary pods.
    """
    if percent <= 0 or stable_replicas <= 0:
        return 0
    target = min(percent, 100) / 100
    return min(
        range(1, stable_replicas + 1),
        key=lambda canary: (abs(canary / (stable_replicas + canary) - target), canary),
    )


def gateway_canary_replicas(stable_replicas: int, percent: int) -> int:
    """Canary pods for an exact (Gateway) split: capacity in proportion to the load.

    percent % of the stable's capacity, rounded up, at least 1 while the canary takes any
    requests (mirrored ones too): 9 stable at 10 % -> 1; 10 at 25 % -> 3.
    """
    if percent <= 0:
        return 0
    return max(1, -(-max(stable_replicas, 1) * min(percent, 100) // 100))


def effective_percent(stable_ready: int, canary_ready: int) -> int:
    """The canary's share of the ready pods, in whole %: what the Service really does."""
    total = stable_ready + canary_ready
    return round(100 * canary_ready / total) if total else 0


def traffic_text(canary_percent: int, *, mirror: bool = False) -> str:
    """status.canary.traffic: 'stable 90 / canary 10', or 'stable 100 / mirror 10'."""
    if mirror:
        return f"stable 100 / mirror {canary_percent}"
    return f"stable {100 - canary_percent} / canary {canary_percent}"


def track_selector(md: ModelDeployment, track: str) -> dict[str, str]:
    """The labels that pick one track's pods of ``md``."""
    return {**selector_labels(md), TRACK_LABEL: track}


def template_hash(md: ModelDeployment) -> str:
    """Hash of what shapes the canary's pods (status.canary.templateHash): a rolled-back
    canary is retried only when one of these changes, not on a trafficPercent edit."""
    canary = md.spec.canary
    if canary is None:
        return ""
    shape = canary.model_dump(
        by_alias=True, include={"model", "image", "env", "resources"}, exclude_none=True
    )
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def canary_config_map(md: ModelDeployment, cfg: OperatorConfig) -> dict[str, Any] | None:
    """The canary's own ConfigMap, so stable and canary config never roll each other."""
    view = canary_view(md)
    built = config_map(view, config_map_data(view, cfg))
    if built is not None:
        built["metadata"]["name"] = canary_name(md)
    return built


def canary_deployment(
    md: ModelDeployment,
    cfg: OperatorConfig,
    *,
    replicas: int,
    config: dict[str, Any] | None,
) -> dict[str, Any]:
    """The canary Deployment at ``replicas`` pods (the controller decides: canary_replicas,
    gateway_canary_replicas, canary.replicas, or 0 after a rollback).

    Its selector adds the track label to the stable's, so the two Deployments never own
    each other's pods while the main Service (the stable's selector) sees both.
    """
    built = deployment(canary_view(md), cfg, config=config)
    built["metadata"]["name"] = canary_name(md)
    built["metadata"]["labels"] = {**built["metadata"]["labels"], TRACK_LABEL: CANARY}
    spec = built["spec"]
    spec["replicas"] = replicas
    spec["selector"] = {"matchLabels": track_selector(md, CANARY)}
    template_labels = spec["template"]["metadata"]["labels"]
    spec["template"]["metadata"]["labels"] = {**template_labels, TRACK_LABEL: CANARY}
    # Rollback is judged by the operator against canary.progressDeadlineSeconds; the
    # Deployment's own deadline then reports the same thing in its conditions.
    canary = md.spec.canary
    assert canary is not None
    spec["progressDeadlineSeconds"] = canary.progress_deadline_seconds
    return built
