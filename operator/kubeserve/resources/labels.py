"""The labels and owner references every child carries."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..api import API_VERSION, KIND, ModelDeployment
from .names import label_value

MANAGED_BY = "kubeserve"
INSTANCE = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
# Every child we create carries it: the startup inventory and the child watches select by it.
MANAGED_BY_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
# Which version a pod serves (docs/rollouts.md): on every canary pod, and on the stable pods
# of a ModelDeployment routed through a Gateway (its stable-only Service selects them).
TRACK_LABEL = "kubeserve.io/track"
STABLE = "stable"
CANARY = "canary"


def selector_labels(md: ModelDeployment) -> dict[str, str]:
    """The immutable subset used by the Deployment selector, Service and PDB."""
    return {
        "app.kubernetes.io/name": md.spec.runtime.value,
        INSTANCE: label_value(md.name),
        MANAGED_BY_LABEL: MANAGED_BY,
    }


def pod_labels(md: ModelDeployment) -> dict[str, str]:
    """The pod template's labels: nothing that changes when only the operator changes.

    A pod template label that follows the operator's version would change every template on
    every operator upgrade, and so restart every model server in the cluster.
    """
    return {
        **selector_labels(md),
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "kubeserve",
    }


def labels(md: ModelDeployment) -> dict[str, str]:
    """The labels of every child object itself: the pod labels plus the operator's version."""
    return {**pod_labels(md), "app.kubernetes.io/version": __version__}


def owner_reference(md: ModelDeployment) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": md.name,
        "uid": md.metadata.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(md: ModelDeployment, name: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": md.namespace, "labels": labels(md)}
    if md.metadata.uid:
        meta["ownerReferences"] = [owner_reference(md)]
    return meta
