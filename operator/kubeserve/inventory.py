"""The startup inventory: one LIST per child kind instead of a GET per kind and object.

A new operator process must find out which children exist before it trusts its own cache:
a previous process may have died after creating a child that the spec no longer wants, and
only a look at the cluster shows it. Listing each kind once, by our managed-by label, in
each watched namespace (or cluster-wide), answers that for every ModelDeployment at once.
Without it the first reconcile of each ModelDeployment looks up every kind by name: seven
GETs each, 7,000 for 1,000 ModelDeployments at every restart.

A child whose managed-by label was removed by hand is not listed; SSA puts the label back
at its next apply, and until then it is still applied and pruned by name like any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .kube import ApiError, KubeClient
from .resources.kinds import CHILD_KINDS
from .resources.labels import MANAGED_BY_SELECTOR

# (kind, namespace, name) of a child.
ChildKey = tuple[str, str, str]


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    """The uid of the object's controller (at most one owner reference is the controller)."""
    for ref in obj.get("metadata", {}).get("ownerReferences", []):
        if ref.get("controller"):
            return str(ref.get("uid", ""))
    return None


async def take_inventory(kube: KubeClient, namespaces: Sequence[str] | None) -> dict[ChildKey, str]:
    """Every child we label as ours, mapped to the uid of its controller.

    ``namespaces``: the watched namespaces; None for all. Raises ApiError when a kind cannot
    be listed (forbidden, API server down): a partial inventory would hide stale children.
    """
    owners: dict[ChildKey, str] = {}
    for kind in CHILD_KINDS:
        scopes: Sequence[str | None] = namespaces or [None]
        for namespace in scopes:
            try:
                items = await kube.list(
                    kind.api_version, kind.plural, namespace, label_selector=MANAGED_BY_SELECTOR
                )
            except ApiError as exc:
                if exc.status == 404 and kind.optional:
                    break  # KEDA is not installed: no ScaledObject can exist
                raise
            for obj in items:
                uid = controller_uid(obj)
                if uid:
                    meta = obj["metadata"]
                    owners[(kind.kind, meta.get("namespace", ""), meta["name"])] = uid
    return owners
