"""The ConfigMap holding the runtime's config files (mounted at /etc/kubeserve)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api import ModelDeployment
from .labels import metadata
from .names import child_name


def config_map(md: ModelDeployment, data: Mapping[str, str]) -> dict[str, Any] | None:
    if not data:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(md, child_name(md.name)),
        "data": dict(data),
    }
