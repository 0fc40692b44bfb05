"""The ConfigMap holding the runtime's config files (mounted at /etc/kubeserve)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from ..api import ModelDeployment
from .labels import metadata
from .names import child_name

# On the pod template: the servers read their config files only at start, so a change of the
# ConfigMap alone would reach no running pod. Its hash in the template rolls the pods instead
# (the checksum annotation Helm charts use for the same reason).
CONFIG_HASH_ANNOTATION = "kubeserve.io/config-hash"


def config_map(md: ModelDeployment, data: Mapping[str, str]) -> dict[str, Any] | None:
    if not data:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(md, child_name(md.name)),
        "data": dict(data),
    }


def config_hash(data: Mapping[str, str]) -> str:
    """sha256 of the ConfigMap's data, independent of key order."""
    canonical = json.dumps(dict(data), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
