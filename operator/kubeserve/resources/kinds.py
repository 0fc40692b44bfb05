"""Every kind of child the operator may create: the source for pruning and for RBAC."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChildKind:
    api_version: str
    kind: str
    plural: str
    # Optional integrations (KEDA, its HTTP add-on) may be absent from a cluster.
    optional: bool = False

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]


CHILD_KINDS: tuple[ChildKind, ...] = (
    ChildKind("v1", "ConfigMap", "configmaps"),
    ChildKind("apps/v1", "Deployment", "deployments"),
    ChildKind("v1", "Service", "services"),
    ChildKind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    ChildKind("keda.sh/v1alpha1", "ScaledObject", "scaledobjects", optional=True),
    ChildKind("http.keda.sh/v1alpha1", "HTTPScaledObject", "httpscaledobjects", optional=True),
    ChildKind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ChildKind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    # The canary's routes (docs/rollouts.md): the Gateway API CRDs may be absent.
    ChildKind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes", optional=True),
    ChildKind("gateway.networking.k8s.io/v1", "GRPCRoute", "grpcroutes", optional=True),
)
# The name suffixes a kind's children may have: one child per kind and suffix
# (child_name(md, suffix)). The canary adds a Deployment, a ConfigMap and, with a Gateway,
# the stable-only and canary-only Services.
CHILD_SUFFIXES: dict[str, tuple[str, ...]] = {
    "ConfigMap": ("", "canary"),
    "Deployment": ("", "canary"),
    "Service": ("", "stable", "canary"),
}


def suffixes(kind: ChildKind) -> tuple[str, ...]:
    return CHILD_SUFFIXES.get(kind.kind, ("",))


# Watched by label (handlers.py): every kind a cluster always serves. KEDA and its HTTP
# add-on may be absent, so drift of their objects waits for the resync.
WATCHED_CHILD_KINDS = tuple(kind for kind in CHILD_KINDS if not kind.optional)


def kind_of(obj: dict[str, object]) -> ChildKind:
    for kind in CHILD_KINDS:
        if kind.api_version == obj["apiVersion"] and kind.kind == obj["kind"]:
            return kind
    raise KeyError(f"not a child kind: {obj['apiVersion']} {obj['kind']}")
