"""Could any node in the cluster ever run a replica? Pure logic over Node objects.

This answers the Schedulable condition: not "is there free capacity now" (the scheduler
knows, and it changes every second) but "is there a node whose labels, taints and
allocatable devices fit the pod at all". A ModelDeployment asking for an A100 on a cluster
of L4s stays Pending forever; the condition says so, naming what the cluster has:

    requested 1x nvidia.com/gpu (NVIDIA-A100-SXM4-80GB); nodes offer: 2x NVIDIA-L4 (...)

What counts, node by node (the same rules the scheduler applies to the pod we render):

- cordoned nodes (spec.unschedulable) do not count;
- NoSchedule and NoExecute taints must be tolerated by the pod's tolerations (the user's
  plus the GPU toleration); taints the node lifecycle controller sets for passing
  conditions (node.kubernetes.io/*, node.cloudprovider.kubernetes.io/*) are ignored, since
  the node may recover;
- the user's nodeSelector and required node affinity must match;
- allocatable must hold the device resource (nvidia.com/gpu, nvidia.com/mig-1g.10gb, ...)
  at least ``count`` times;
- the GPU Feature Discovery labels must satisfy product and minMemoryMiB.

A cluster autoscaler that can add GPU nodes from zero is invisible here: with no such node
yet the verdict is False, and the message says what the cluster offers now.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .api import ModelDeployment
from .config import OperatorConfig
from .resources import gpu as gpu_rules
from .status import FALSE, TRUE, UNKNOWN, Verdict

SCHEDULABLE = "Schedulable"
# Reasons of the Schedulable condition.
NODES_MATCH = "NodesMatch"
NO_MATCHING_NODES = "NoMatchingNodes"
NO_GPU_REQUESTED = "NoGPURequested"
NODES_UNKNOWN = "NodesUnknown"
NODES_FORBIDDEN = "NodesForbidden"
NO_SPARE_GPU_FOR_CANARY = "NoSpareGPUForCanary"

# Taints the node lifecycle controller and cloud controllers set while a condition lasts.
_TRANSIENT_TAINT_PREFIXES = ("node.kubernetes.io/", "node.cloudprovider.kubernetes.io/")
_BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")
_MAX_GROUPS = 5


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str

    def __str__(self) -> str:
        return (
            f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"
        )


@dataclass(frozen=True)
class NodeSummary:
    """What scheduling needs from a Node: small enough to keep one per node in memory."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    # Extended resources only (names with a '/'), e.g. {"nvidia.com/gpu": 8}.
    devices: Mapping[str, int] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False


def node_summary(node: Mapping[str, Any]) -> NodeSummary:
    """Reduce a Node (a dict as the API returns it) to what ``schedulable`` reads."""
    metadata = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    allocatable = status.get("allocatable") or {}
    return NodeSummary(
        name=str(metadata.get("name", "")),
        labels=dict(metadata.get("labels") or {}),
        devices={
            str(name): _device_count(value)
            for name, value in allocatable.items()
            if "/" in str(name)
        },
        taints=tuple(
            Taint(str(t.get("key", "")), str(t.get("value") or ""), str(t.get("effect", "")))
            for t in spec.get("taints") or []
        ),
        unschedulable=bool(spec.get("unschedulable", False)),
    )


def schedulable(
    md: ModelDeployment,
    nodes: Iterable[Mapping[str, Any] | NodeSummary] | None,
    cfg: OperatorConfig,
) -> Verdict:
    """The Schedulable condition: could any node ever run one replica of ``md``?

    ``nodes`` are Node objects or their ``node_summary``; None when the operator may not
    list Nodes.
    """
    gpu = md.spec.gpu
    if gpu is None:
        return Verdict(
            SCHEDULABLE, TRUE, NO_GPU_REQUESTED, "no GPU requested; the scheduler may use any node"
        )
    if nodes is None:
        return Verdict(
            SCHEDULABLE,
            UNKNOWN,
            NODES_FORBIDDEN,
            "the operator may not list Nodes (grant it the kubeserve-nodes ClusterRole: get, "
            "list and watch on nodes); GPU placement is not checked",
        )
    summaries = [n if isinstance(n, NodeSummary) else node_summary(n) for n in nodes]
    if not summaries:
        return Verdict(SCHEDULABLE, UNKNOWN, NODES_UNKNOWN, "no Node observed yet")

    pod = _PodNeeds.of(md, cfg)
    excluded: Counter[str] = Counter()
    untolerated: Counter[str] = Counter()
    candidates: list[NodeSummary] = []
    fitting: list[NodeSummary] = []
    for node in summaries:
        # Only GPU nodes set aside are worth reporting; CPU nodes would be noise.
        report = bool(_accelerators(node))
        if node.unschedulable:
            excluded["cordoned"] += report
            continue
        blocking = [t for t in node.taints if not pod.tolerates(t)]
        if blocking:
            excluded["with a taint the pod does not tolerate"] += report
            if report:
                untolerated.update(str(t) for t in blocking)
            continue
        if not pod.placement_matches(node):
            excluded["outside your nodeSelector/affinity"] += report
            continue
        candidates.append(node)
        if pod.gpu_fits(node):
            fitting.append(node)

    if fitting:
        noun = "node" if len(fitting) == 1 else "nodes"
        return Verdict(
            SCHEDULABLE,
            TRUE,
            NODES_MATCH,
            f"{len(fitting)} {noun} can run a replica: {_inventory(fitting, pod)}",
        )
    message = f"requested {pod.describe()}; {_offer(candidates, summaries, pod)}"
    reported = sorted((why, n) for why, n in excluded.items() if n)
    if reported:
        details = ", ".join(f"{n} {why}" for why, n in reported)
        if untolerated:
            details += " (" + ", ".join(sorted(untolerated)[:3]) + ")"
        message += f"; not counted: {details}"
    return Verdict(SCHEDULABLE, FALSE, NO_MATCHING_NODES, message)


def bound_devices(pod: Mapping[str, Any]) -> tuple[str, dict[str, int]] | None:
    """(node, device requests) of a pod that holds devices on a node, else None.

    A pod holds its devices once bound (spec.nodeName) until it ends (Succeeded/Failed) or
    is deleted. Requests of all containers are summed (init containers run before them and
    release theirs, so they do not add).
    """
    spec = pod.get("spec") or {}
    node = spec.get("nodeName")
    phase = (pod.get("status") or {}).get("phase")
    if not node or phase in ("Succeeded", "Failed"):
        return None
    devices: Counter[str] = Counter()
    for container in spec.get("containers") or []:
        resources = container.get("resources") or {}
        wanted = resources.get("requests") or resources.get("limits") or {}
        for name, value in wanted.items():
            if "/" in str(name):
                devices[str(name)] += _device_count(value)
    held = {name: count for name, count in devices.items() if count > 0}
    return (str(node), held) if held else None


def devices_in_use(
    pods: Iterable[tuple[str, Mapping[str, int]] | None],
) -> dict[str, dict[str, int]]:
    """Devices requested per node by the given ``bound_devices`` results."""
    used: dict[str, dict[str, int]] = {}
    for bound in pods:
        if bound is None:
            continue
        node, devices = bound
        per_node = used.setdefault(node, {})
        for name, count in devices.items():
            per_node[name] = per_node.get(name, 0) + count
    return used


def canary_spare_gpus(
    md: ModelDeployment,
    nodes: Iterable[Mapping[str, Any] | NodeSummary] | None,
    used: Mapping[str, Mapping[str, int]] | None,
    cfg: OperatorConfig,
    *,
    unplaced: int,
) -> Verdict | None:
    """Schedulable=False, NoSpareGPUForCanary when the matching nodes lack spare devices for
    the ``unplaced`` canary pods (not yet bound to a node); None when they fit or nothing is
    known.

    Spare = a matching node's allocatable minus what the pods in ``used`` request there.
    ``used`` holds only kubeserve's model-server pods (the operator watches those alone):
    other workloads' GPU pods are not seen, so this is an early warning, not a promise; the
    scheduler remains the judge. A pod does not span nodes: a node with 3 spare devices fits
    one pod of 2.
    """
    gpu = md.spec.gpu
    if gpu is None or nodes is None or unplaced <= 0:
        return None
    pod = _PodNeeds.of(md, cfg)
    used = used or {}
    spare: dict[str, int] = {}
    for node in (n if isinstance(n, NodeSummary) else node_summary(n) for n in nodes):
        if node.unschedulable or not all(pod.tolerates(t) for t in node.taints):
            continue
        if not pod.placement_matches(node) or not pod.gpu_fits(node):
            continue
        in_use = (used.get(node.name) or {}).get(pod.device, 0)
        spare[node.name] = max(node.devices.get(pod.device, 0) - in_use, 0)
    if not spare:
        return None  # no matching node at all: the Schedulable verdict already says so
    fits = sum(free // pod.count for free in spare.values())
    if fits >= unplaced:
        return None
    free = sorted(spare.items(), key=lambda item: (-item[1], item[0]))
    listed = ", ".join(f"{name} {n}" for name, n in free[:_MAX_GROUPS])
    if len(free) > _MAX_GROUPS:
        listed += f" and {len(free) - _MAX_GROUPS} more nodes"
    pods = "pod" if unplaced == 1 else "pods"
    return Verdict(
        SCHEDULABLE,
        FALSE,
        NO_SPARE_GPU_FOR_CANARY,
        f"the canary needs {unplaced} {pods} x {pod.count} {pod.device}; free on matching "
        f"nodes: {listed} (room for {fits}); counted against kubeserve's model-server pods "
        "only, other GPU workloads are not seen; the canary keeps weight 0 and its deadline "
        "rolls it back if no GPU frees up",
    )


@dataclass(frozen=True)
class _PodNeeds:
    device: str
    count: int
    products: tuple[str, ...]
    min_memory_mib: int | None
    product_label: str
    memory_label: str
    node_selector: Mapping[str, str]
    terms: tuple[Mapping[str, Any], ...]  # the user's required nodeSelectorTerms, ORed
    tolerations: tuple[Mapping[str, Any], ...]

    @classmethod
    def of(cls, md: ModelDeployment, cfg: OperatorConfig) -> _PodNeeds:
        gpu = md.spec.gpu
        assert gpu is not None
        node_affinity = (md.spec.affinity or {}).get("nodeAffinity") or {}
        required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
        return cls(
            device=gpu_rules.gpu_resource_name(gpu),
            count=gpu.count,
            products=tuple(gpu.product or ()),
            min_memory_mib=gpu.min_memory_mi_b,
            product_label=cfg.gpu_product_label,
            memory_label=cfg.gpu_memory_label,
            node_selector=dict(md.spec.node_selector or {}),
            terms=tuple(required.get("nodeSelectorTerms") or ()),
            tolerations=tuple(gpu_rules.tolerations(md, cfg)),
        )

    def tolerates(self, taint: Taint) -> bool:
        if taint.effect not in _BLOCKING_EFFECTS:
            return True
        if taint.key.startswith(_TRANSIENT_TAINT_PREFIXES):
            return True
        return any(_tolerates(t, taint) for t in self.tolerations)

    def placement_matches(self, node: NodeSummary) -> bool:
        if any(node.labels.get(k) != v for k, v in self.node_selector.items()):
            return False
        return not self.terms or any(_term_matches(term, node) for term in self.terms)

    def gpu_fits(self, node: NodeSummary) -> bool:
        if node.devices.get(self.device, 0) < self.count:
            return False
        if self.products and node.labels.get(self.product_label) not in self.products:
            return False
        if self.min_memory_mib is not None:
            memory = _as_int(node.labels.get(self.memory_label))
            if memory is None or memory < self.min_memory_mib:
                return False
        return True

    def describe(self) -> str:
        wants = []
        if self.products:
            wants.append(" or ".join(self.products))
        if self.min_memory_mib is not None:
            wants.append(f"at least {self.min_memory_mib} MiB")
        text = f"{self.count}x {self.device}"
        if wants:
            text += f" ({', '.join(wants)})"
        return text


def _offer(
    candidates: Sequence[NodeSummary], everyone: Sequence[NodeSummary], pod: _PodNeeds
) -> str:
    with_device = [n for n in candidates if n.devices.get(pod.device, 0) > 0]
    if with_device:
        return f"nodes offer: {_inventory(with_device, pod)}"
    if any(n.devices.get(pod.device, 0) > 0 for n in everyone):
        text = f"every node with {pod.device} is set aside"
    elif pod.device.startswith(gpu_rules.MIG_RESOURCE_PREFIX):
        text = (
            f"no node advertises {pod.device} (is the NVIDIA device plugin running with the "
            "mixed MIG strategy and this profile?)"
        )
    else:
        text = f"no node advertises {pod.device} (is the GPU Operator or device plugin running?)"
    others = [n for n in candidates if _accelerators(n)]
    if others:
        text += "; nodes offer: " + _inventory(others, pod, all_accelerators=True)
    return text


def _inventory(
    nodes: Sequence[NodeSummary], pod: _PodNeeds, *, all_accelerators: bool = False
) -> str:
    groups: Counter[tuple[str, str]] = Counter()
    for node in nodes:
        product = node.labels.get(pod.product_label, "GPU without a product label")
        details = []
        memory = node.labels.get(pod.memory_label)
        if memory is not None:
            details.append(f"{memory} MiB")
        if all_accelerators:
            devices = _accelerators(node)
        else:
            devices = {pod.device: node.devices[pod.device]}
        details += [f"{count} {name}" for name, count in sorted(devices.items())]
        groups[(product, ", ".join(details))] += 1
    ordered = sorted(groups.items(), key=lambda item: (-item[1], item[0]))
    text = ", ".join(
        f"{n}x {product} ({details}{' each' if n > 1 else ''})"
        for (product, details), n in ordered[:_MAX_GROUPS]
    )
    if len(ordered) > _MAX_GROUPS:
        text += f" and {sum(n for _, n in ordered[_MAX_GROUPS:])} more"
    return text


def _accelerators(node: NodeSummary) -> dict[str, int]:
    """Device resources that look like accelerators (GPUs, MIG slices, other vendors')."""
    return {
        name: count
        for name, count in node.devices.items()
        if count > 0 and ("gpu" in name or name.startswith(gpu_rules.MIG_RESOURCE_PREFIX))
    }


def _tolerates(toleration: Mapping[str, Any], taint: Taint) -> bool:
    """Kubernetes' Toleration.ToleratesTaint."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.effect:
        return False
    key = toleration.get("key") or ""
    operator = toleration.get("operator") or "Equal"
    if not key:
        return operator == "Exists"
    if key != taint.key:
        return False
    return operator == "Exists" or (toleration.get("value") or "") == taint.value


def _term_matches(term: Mapping[str, Any], node: NodeSummary) -> bool:
    """A NodeSelectorTerm: its requirements ANDed; an empty term matches nothing."""
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False
    return all(_requirement_matches(r, node.labels) for r in expressions) and all(
        _requirement_matches(r, {"metadata.name": node.name}) for r in fields
    )


def _requirement_matches(requirement: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key = requirement.get("key", "")
    operator = requirement.get("operator")
    values = [str(v) for v in requirement.get("values") or []]
    present = key in labels
    value = labels.get(key)
    if operator == "In":
        return present and value in values
    if operator == "NotIn":
        return not present or value not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and len(values) == 1:
        have, bound = _as_int(value), _as_int(values[0])
        if have is None or bound is None:
            return False
        return have > bound if operator == "Gt" else have < bound
    return False


def _as_int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _device_count(quantity: Any) -> int:
    # Device resources are whole numbers ("8"); anything else counts as none.
    try:
        return max(int(str(quantity)), 0)
    except ValueError:
        return 0
