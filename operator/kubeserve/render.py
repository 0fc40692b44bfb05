"""desired children = render(ModelDeployment, config): the pure half of reconcile.

`kubeserve render` prints this; the operator applies it. The canary's replicas and route
weights are the controller's decision (rollout.plan, from what the cluster shows); without
a plan (`kubeserve render`), the canary is shown as it starts: sized, at weight 0.
"""

from __future__ import annotations

from typing import Any

from .api import ModelDeployment
from .config import OperatorConfig
from .resources.autoscaling import autoscaler
from .resources.canary import canary_config_map, canary_deployment
from .resources.configmap import config_map
from .resources.deployment import config_map_data, deployment
from .resources.gateway import grpc_route, http_route, parent_ref, track_service
from .resources.labels import CANARY, STABLE, TRACK_LABEL
from .resources.networkpolicy import network_policy
from .resources.pdb import pod_disruption_budget
from .resources.service import service
from .rollout import (
    ROLLBACK_CAUSE_ANNOTATION,
    ROLLED_BACK_ANNOTATION,
    SHAPE_ANNOTATION,
    Observed,
    Plan,
    plan,
)


def render(
    md: ModelDeployment, cfg: OperatorConfig, canary: Plan | None = None
) -> list[dict[str, Any]]:
    """The children in apply order: config before the pods that mount it; the routes
    before the canary Deployment (on a rollback, weight 0 is applied before replicas 0)."""
    if canary is None:
        canary = plan(md, cfg, Observed())
    gateway = parent_ref(md, cfg) is not None
    config = config_map(md, config_map_data(md, cfg))
    stable = deployment(md, cfg, config=config)
    main = service(md)
    if gateway:
        # The Gateway splits; the main Service (in-cluster clients) and the stable-only
        # Service select the stable track alone. Labelling the template restarts the stable
        # pods once, when a Gateway is first set (docs/rollouts.md).
        labels = stable["spec"]["template"]["metadata"]["labels"]
        stable["spec"]["template"]["metadata"]["labels"] = {**labels, TRACK_LABEL: STABLE}
        main["spec"]["selector"] = {**main["spec"]["selector"], TRACK_LABEL: STABLE}
    _cap_unavailable(stable, canary.stable_max_unavailable)
    children: list[dict[str, Any] | None] = [config, stable, main]
    if gateway:
        children.append(track_service(md, STABLE))
        if canary.render_canary:
            children.append(track_service(md, CANARY))
        children.append(http_route(md, cfg, canary_percent=canary.percent, mirror=canary.mirror))
        children.append(grpc_route(md, cfg, canary_percent=canary.percent, mirror=canary.mirror))
    if canary.render_canary:
        canary_config = canary_config_map(md, cfg)
        built = canary_deployment(md, cfg, replicas=canary.replicas, config=canary_config)
        notes = {SHAPE_ANNOTATION: canary.shape}
        if canary.rolled_back is not None:
            notes[ROLLED_BACK_ANNOTATION] = canary.shape
            notes[ROLLBACK_CAUSE_ANNOTATION] = canary.rolled_back
        built["metadata"]["annotations"] = {**built["metadata"].get("annotations", {}), **notes}
        children.extend([canary_config, built])
    children.extend([autoscaler(md, cfg), pod_disruption_budget(md), network_policy(md)])
    return [child for child in children if child is not None]


def _cap_unavailable(stable: dict[str, Any], cap: int | None) -> None:
    """During a promotion: the stable may lose no more Ready pods than the canary covers."""
    if cap is None:
        return
    rolling = stable["spec"].get("strategy", {}).get("rollingUpdate")
    if rolling is None:
        return  # Recreate (one GPU replica): the canary's pods cover the gap
    rolling["maxUnavailable"] = cap
    if cap == 0 and str(rolling.get("maxSurge")) in ("0", "0%"):
        rolling["maxSurge"] = 1
