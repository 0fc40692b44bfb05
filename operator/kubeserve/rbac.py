"""The operator's Kubernetes permissions: the single source, derived from what the code does.

The Helm chart writes these rules out by hand (charts/kubeserve/templates/_rbac.tpl) and
tests/chart/test_rbac.py checks that the rendered Roles equal what this module returns, so a
child kind added to ``CHILD_KINDS`` without RBAC fails a test instead of a cluster.

Where each permission comes from:

- ModelDeployments: kopf lists and watches them; the operator reads them (get) and patches
  only ``/status``. kopf writes nothing to them: the operator registers no handler that
  needs a finalizer or progress annotations, and skips kopf's diff base.
- ``modeldeployments/finalizers`` update: every child's owner reference sets
  ``blockOwnerDeletion: true`` (resources/labels.py); on clusters with the
  OwnerReferencesPermissionEnforcement admission plugin (OpenShift, hardened clusters),
  setting it needs update on the owner's ``finalizers`` subresource.
- Children (``CHILD_KINDS``): get (observe), list (the startup inventory, by label),
  create (server-side apply to a missing object is a create), patch (server-side apply),
  delete (prune). Children that every cluster serves (all but KEDA's ScaledObject and the
  KEDA HTTP add-on's HTTPScaledObject) are also
  watched, by label: a deleted or hand-edited child is restored at once, and the Deployment's
  changes update the status.
- Events (core v1): kopf posts them with POST, never PATCH or PUT (kopf's documented RBAC needs
  only ``create``).
- Pods: list and watch, read-only, by label (our model servers only): their status holds
  each cold start's timings (coldstarts.py).
- Nodes: get, list and watch, read-only, for the GPU ``Schedulable`` condition.
- CustomResourceDefinitions: list and watch, only when watching all namespaces. This is kopf's
  documented need for runtime observation of resources (the default,
  ``settings.scanning.disabled = False``). A namespaced operator must run with scanning
  disabled, because namespaced mode grants nothing cluster-scoped but Nodes.

- Leases (coordination.k8s.io), in the operator's own namespace only: leader election
  (leadership.py) reads and renews (GET, PUT) one Lease, named after the release, and
  creates it when absent. ``create`` cannot be limited to a name; get and update are.

Not needed: namespaces (kopf lists them only in namespaced mode with scanning on), peering
objects (the operator runs standalone), admission webhook configurations (none), and API
discovery (``/api``, ``/apis``: every authenticated user may read them).
"""

from __future__ import annotations

from .api import GROUP, PLURAL
from .resources.kinds import CHILD_KINDS, WATCHED_CHILD_KINDS, ChildKind

Rule = dict[str, list[str]]

# The order `kubectl describe clusterrole` and most charts use; rules list verbs in it.
VERB_ORDER = ("get", "list", "watch", "create", "update", "patch", "delete")

MODEL_DEPLOYMENT_VERBS = ("get", "list", "watch")
STATUS_VERBS = ("get", "patch")
FINALIZERS_VERBS = ("update",)
# list: the startup inventory (inventory.py), one LIST per kind instead of a GET per object.
CHILD_VERBS = ("get", "list", "create", "patch", "delete")
# Children the operator watches as well as writes: (API group, plural).
WATCHED_CHILDREN = frozenset((kind.group, kind.plural) for kind in WATCHED_CHILD_KINDS)
WATCH_VERBS = ("list", "watch")
EVENT_VERBS = ("create",)
POD_VERBS = ("list", "watch")
NODE_VERBS = ("get", "list", "watch")
CRD_OBSERVATION_VERBS = ("list", "watch")


def _rule(group: str, resources: list[str], verbs: tuple[str, ...]) -> Rule:
    ordered = sorted(set(verbs), key=VERB_ORDER.index)
    return {"apiGroups": [group], "resources": resources, "verbs": ordered}


def child_verbs(kind: ChildKind) -> tuple[str, ...]:
    verbs: tuple[str, ...] = CHILD_VERBS
    if (kind.group, kind.plural) in WATCHED_CHILDREN:
        verbs = (*verbs, *WATCH_VERBS)
    return tuple(sorted(set(verbs), key=VERB_ORDER.index))


def rules(*, namespaced: bool) -> list[Rule]:
    """The operator's rules where it watches ModelDeployments.

    ``namespaced=True``: a Role in each watched namespace (namespaced resources only).
    ``namespaced=False``: a ClusterRole bound cluster-wide, which also carries kopf's
    CustomResourceDefinition observation.
    """
    out: list[Rule] = [
        _rule(GROUP, [PLURAL], MODEL_DEPLOYMENT_VERBS),
        _rule(GROUP, [f"{PLURAL}/status"], STATUS_VERBS),
        _rule(GROUP, [f"{PLURAL}/finalizers"], FINALIZERS_VERBS),
    ]
    out.extend(_rule(kind.group, [kind.plural], child_verbs(kind)) for kind in CHILD_KINDS)
    out.append(_rule("", ["events"], EVENT_VERBS))
    out.append(_rule("", ["pods"], POD_VERBS))
    if not namespaced:
        out.append(
            _rule("apiextensions.k8s.io", ["customresourcedefinitions"], CRD_OBSERVATION_VERBS)
        )
    return out


def cluster_rules() -> list[Rule]:
    """Cluster-scoped reads needed in both modes: Nodes, for GPU schedulability."""
    return [_rule("", ["nodes"], NODE_VERBS)]


LEASE_GROUP = "coordination.k8s.io"
LEASE_CREATE_VERBS = ("create",)
LEASE_VERBS = ("get", "update")


def lease_rules(name: str) -> list[Rule]:
    """A Role in the operator's namespace: its leader election Lease ``name``, nothing else."""
    return [
        _rule(LEASE_GROUP, ["leases"], LEASE_CREATE_VERBS),
        {**_rule(LEASE_GROUP, ["leases"], LEASE_VERBS), "resourceNames": [name]},
    ]


def permissions(rule_list: list[Rule]) -> set[tuple[str, str, str]]:
    """Expand rules into (apiGroup, resource, verb) triples, for comparing rule sets."""
    return {
        (group, resource, verb)
        for rule in rule_list
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }
