"""desired children = render(ModelDeployment, config): the pure half of reconcile.

`kubeserve render` prints this; the operator applies it.
"""

from __future__ import annotations

from typing import Any

from .api import ModelDeployment
from .config import OperatorConfig
from .resources.autoscaling import autoscaler
from .resources.configmap import config_map
from .resources.deployment import config_map_data, deployment
from .resources.networkpolicy import network_policy
from .resources.pdb import pod_disruption_budget
from .resources.service import service


def render(md: ModelDeployment, cfg: OperatorConfig) -> list[dict[str, Any]]:
    """The children in apply order: config before the pods that mount it."""
    config = config_map(md, config_map_data(md, cfg))
    children = [
        config,
        deployment(md, cfg, config=config),
        service(md),
        autoscaler(md, cfg),
        pod_disruption_budget(md),
        network_policy(md),
    ]
    return [child for child in children if child is not None]
