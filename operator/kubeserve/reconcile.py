"""One idempotent reconcile for create, update, resume and the drift-repair timer.

desired = render(md, config); apply what we own; prune what we own and no longer want;
compute the status. There are no kopf imports here: handlers.py adapts kopf to this.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from . import rollout
from .api import KIND, InvalidSpec, ModelDeployment
from .config import OperatorConfig
from .inventory import ChildKey, controller_uid
from .kube import ApiError, KubeClient
from .render import render
from .resources.autoscaling import (
    AUTOSCALER_READY,
    KEDA_HTTP_NOT_INSTALLED,
    KEDA_NOT_INSTALLED,
    AutoscalerState,
    autoscaler_status,
    expected_autoscaler,
    http_add_on_hpa_name,
    keda_hpa_name,
    not_installed,
)
from .resources.canary import track_selector
from .resources.kinds import CHILD_KINDS, ChildKind, kind_of, suffixes
from .resources.labels import CANARY
from .resources.names import child_name
from .resources.service import url
from .rollout import analysis_breach
from .scheduling import canary_spare_gpus, schedulable
from .status import (
    FALSE,
    TRUE,
    UNKNOWN,
    Verdict,
    deployment_verdicts,
    find_condition,
    invalid_spec_verdicts,
    now_rfc3339,
    ready_verdict,
    replica_counts,
    status_for,
    valid_spec_verdict,
)

logger = logging.getLogger(__name__)


@dataclass
class ReconcileResult:
    status: dict[str, Any]
    # Human-facing events: (type Normal|Warning, reason, message).
    events: list[tuple[str, str, str]] = field(default_factory=list)
    # Seconds after which to look again although no event may come (None: no need).
    retry_after: float | None = None


@dataclass
class ChildCache:
    """What this process knows about children, so a resync needs no GETs.

    ``owners`` maps a child to the uid of the ModelDeployment controlling it, for children
    this process applied, looked up, or found in the startup inventory (inventory.py).
    ``inventoried``: that inventory listed every kind, so every child we control is in
    ``owners`` or was created by this process since. Without it, the first reconcile of a
    ModelDeployment in this process (its uid not yet in ``visited``) looks up every kind.
    """

    owners: dict[ChildKey, str] = field(default_factory=dict)
    visited: set[str] = field(default_factory=set)
    inventoried: bool = False
    # uid -> the autoscaler engine known to hold its Deployment's replicas.
    replicas_released: dict[str, str] = field(default_factory=dict)

    def controls(self, key: ChildKey, uid: str) -> bool:
        return self.owners.get(key) == uid

    def forget(self, md_uid: str) -> None:
        """The ModelDeployment is gone; the garbage collector takes its children."""
        self.visited.discard(md_uid)
        self.replicas_released.pop(md_uid, None)
        for key in [key for key, uid in self.owners.items() if uid == md_uid]:
            del self.owners[key]


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return controller_uid(obj) == uid


async def reconcile(
    body: Mapping[str, Any],
    kube: KubeClient,
    cfg: OperatorConfig,
    *,
    nodes: Iterable[Any] | None = None,
    cache: ChildCache | None = None,
    now: str | None = None,
    gpu_in_use: Mapping[str, Mapping[str, int]] | None = None,
) -> ReconcileResult:
    """``nodes``: Node summaries for the Schedulable condition (None: cannot list Nodes).

    ``gpu_in_use``: devices requested per node by kubeserve's model-server pods (the only
    pods the operator watches), for the canary's spare-GPU check.
    """
    now = now or now_rfc3339()
    cache = cache if cache is not None else ChildCache()
    meta = body.get("metadata", {})
    previous = body.get("status") or {}
    generation = meta.get("generation")
    try:
        md = ModelDeployment.parse(dict(body))
        desired = render(md, cfg)
    except InvalidSpec as exc:
        # Leave every child as it is: a typo must not take a serving model down.
        status = status_for(
            previous,
            generation=generation,
            verdicts=invalid_spec_verdicts(str(exc)),
            now=now,
            include_replicas=False,
        )
        return ReconcileResult(status, [("Warning", "InvalidSpec", str(exc))])

    uid = md.metadata.uid or ""
    main_name = child_name(md.name)
    canary_key = ("Deployment", child_name(md.name, CANARY))
    # The canary is judged from the live objects: always look at them while there may be one.
    canary_involved = md.spec.canary is not None or cache.controls(
        (canary_key[0], md.namespace, canary_key[1]), uid
    )
    look = {_key(obj) for obj in desired}
    if canary_involved:
        look |= {canary_key, ("Deployment", main_name), ("HTTPRoute", main_name)}
    existing = await _fetch_children(kube, md, look, cache, always=canary_involved)
    blockers: list[Verdict] = []
    events: list[tuple[str, str, str]] = []

    pods: list[dict[str, Any]] = []
    live_canary = existing.get(canary_key)
    if live_canary is not None and owned_by(live_canary, uid) and md.spec.canary is not None:
        pods = await kube.list("v1", "pods", md.namespace, label_selector=_canary_pod_selector(md))
    breach, analysis_failures = (None, None)
    last_analysis: str | None = None
    analysis_retry: float | None = None
    if (
        live_canary is not None
        and md.spec.canary is not None
        and md.spec.canary.analysis
        and not rollout.annotations_of(live_canary).get(rollout.ROLLED_BACK_ANNOTATION)
    ):
        # Analysis: only while a canary runs; unknown never rolls back (rollout.py). Once
        # per intervalSeconds: between checks the count and the last time carry over.
        wait = rollout.analysis_wait(md, previous, now)
        if wait > 0:
            before = previous.get("canary") or {}
            analysis_failures = int(before.get("analysisFailures") or 0)
            last_analysis = before.get("lastAnalysisTime")
            analysis_retry = wait
        else:
            breach, analysis_failures = await analysis_breach(md, cfg, previous)
            last_analysis = now
            analysis_retry = float(md.spec.canary.analysis.interval_seconds)
    canary_plan = rollout.plan(
        md,
        cfg,
        rollout.Observed(
            canary=live_canary if live_canary and owned_by(live_canary, uid) else None,
            pods=pods,
            stable=existing.get(("Deployment", main_name)),
            route=existing.get(("HTTPRoute", main_name)),
        ),
        breach=breach,
        previous=previous,
    )
    desired = render(md, cfg, canary_plan)
    events.extend(canary_plan.events)
    wanted = {_key(obj) for obj in desired}
    if canary_plan.keep:
        # Promotion or abort: the live canary keeps serving until the plan lets it go.
        wanted |= {k for k in existing if k[1] != main_name and k[0] != "HTTPRoute"}

    # Prune first: KEDA refuses a ScaledObject for a Deployment an old HPA still scales.
    for key, stale in existing.items():
        kind = KINDS_BY_NAME[key[0]]
        if key in wanted or not owned_by(stale, uid):
            continue
        name = stale["metadata"]["name"]
        await kube.delete(
            kind.api_version, kind.plural, md.namespace, name, uid=stale["metadata"]["uid"]
        )
        cache.owners.pop((kind.kind, md.namespace, name), None)
        events.append(("Normal", "Pruned", f"deleted {kind.kind} {name}"))

    applied: dict[tuple[str, str], dict[str, Any]] = {}
    autoscaler_verdict: Verdict | None = None
    canary_problem: Verdict | None = None
    retry_after: float | None = canary_plan.retry_after
    if analysis_retry is not None and not canary_plan.keep and canary_plan.render_canary:
        # Run again when the next analysis is due.
        retry_after = analysis_retry if retry_after is None else min(retry_after, analysis_retry)
    deployment_failed = False
    for obj in desired:
        kind = kind_of(obj)
        key = _key(obj)
        is_main = key[1] == main_name
        current = existing.get(key)
        if current is not None and not owned_by(current, uid):
            blockers.append(_not_ours(kind, obj["metadata"]["name"], current, md))
            if blockers[-1].reason == PREDECESSOR_REASON:
                retry_after = PREDECESSOR_RETRY_SECONDS
            continue
        if deployment_failed and kind.kind in SELECTOR_KINDS:
            # They select the pods by the Deployment's labels: re-pointed at pods that a
            # refused Deployment never made, they would cut off the pods that serve now.
            continue
        try:
            if kind.kind == "Deployment" and is_main:
                await _hand_over_replicas(kube, md, obj, current, cfg, cache)
            applied[key] = await kube.apply(obj, kind.plural, field_manager=cfg.field_manager)
        except ApiError as exc:
            verdict = await _apply_failure(kube, kind, exc)
            if verdict.status == UNKNOWN:
                raise
            if not is_main and kind.kind != "Service":
                # A canary object: the canary is not Ready, stable serves on.
                canary_problem = replace(verdict, type=rollout.CANARY_READY)
                continue
            deployment_failed = deployment_failed or kind.kind == "Deployment"
            if kind.optional and verdict.reason in NOT_INSTALLED_REASONS:
                autoscaler_verdict = not_installed(kind.api_version)
            blockers.append(verdict)
            continue
        cache.owners[(kind.kind, md.namespace, obj["metadata"]["name"])] = uid

    deployment = applied.get(("Deployment", main_name), existing.get(("Deployment", main_name)))
    if deployment is None and deployment_failed:
        # Refused, yet an earlier one may serve: the status reports the one that runs.
        deployment = await kube.get("apps/v1", "deployments", md.namespace, main_name)
    verdicts = [valid_spec_verdict(), *deployment_verdicts(deployment)]
    autoscaler = await _autoscaler_state(
        kube, md, {k[0]: v for k, v in applied.items() if k[1] == main_name}
    )
    verdicts.append(autoscaler_verdict or autoscaler.condition)
    placement = schedulable(md, nodes, cfg)
    spare_gpus = None
    if canary_plan.render_canary and placement.status == TRUE:
        # Before the canary's pods bind: is there room for them? An early warning only.
        placed = sum(1 for p in pods if (p.get("spec") or {}).get("nodeName"))
        spare_gpus = canary_spare_gpus(
            md, nodes, gpu_in_use, cfg, unplaced=canary_plan.replicas - placed
        )
    # The canary's missing GPUs never hold stable's Ready back.
    verdicts.append(spare_gpus or placement)
    if placement.status == FALSE and replica_counts(deployment)[2] == 0:
        blockers.append(as_ready(placement))
    verdicts.append(ready_verdict(deployment, blockers, autoscaled=bool(md.spec.autoscaling)))
    canary_verdict = canary_problem or canary_plan.verdict
    if canary_verdict is not None:
        verdicts.append(canary_verdict)
    status = status_for(
        previous,
        generation=generation,
        verdicts=verdicts,
        now=now,
        deployment=deployment,
        url=url(md, cfg),
        autoscaler=_autoscaler_summary(md, autoscaler, previous.get("autoscaler")),
    )
    if canary_plan.status is not None or previous.get("canary") is not None:
        status["canary"] = canary_plan.status
        if canary_plan.status is not None and analysis_failures is not None:
            status["canary"] = {**canary_plan.status, "analysisFailures": analysis_failures}
            if last_analysis is not None:
                status["canary"]["lastAnalysisTime"] = last_analysis
    events.extend(("Warning", b.reason, b.message) for b in blockers)
    return ReconcileResult(status, events, retry_after)


NOT_INSTALLED_REASONS = frozenset({KEDA_NOT_INSTALLED.reason, KEDA_HTTP_NOT_INSTALLED.reason})
# Children whose selector holds the Deployment's pod labels.
SELECTOR_KINDS = frozenset({"Service", "PodDisruptionBudget", "NetworkPolicy"})
PREDECESSOR_REASON = "PredecessorBeingDeleted"
# The garbage collector removes a deleted owner's children within seconds; their deletion
# events queue us at once, and this is the fallback should one be missed.
PREDECESSOR_RETRY_SECONDS = 10.0
# The field manager that holds spec.replicas for a moment while the autoscaler takes over.
REPLICAS_HANDOVER_MANAGER = "kubeserve-replicas-handover"


def _not_ours(
    kind: ChildKind, name: str, current: Mapping[str, Any], md: ModelDeployment
) -> Verdict:
    """Why a child we want is not applied: another owner's object, or a namesake's leftover."""
    refs = current.get("metadata", {}).get("ownerReferences", [])
    if any(
        ref.get("controller") and ref.get("kind") == KIND and ref.get("name") == md.name
        for ref in refs
    ):
        return Verdict(
            "Ready",
            FALSE,
            PREDECESSOR_REASON,
            f"{kind.kind} {name} belongs to a deleted ModelDeployment of the same name; it is "
            "replaced once the garbage collector has removed it",
        )
    return Verdict(
        "Ready",
        FALSE,
        "OwnershipConflict",
        f"{kind.kind} {name} exists and is not owned by this ModelDeployment; it is left "
        "untouched. Delete or rename it.",
    )


async def _hand_over_replicas(
    kube: KubeClient,
    md: ModelDeployment,
    desired: Mapping[str, Any],
    live: Mapping[str, Any] | None,
    cfg: OperatorConfig,
    cache: ChildCache,
) -> None:
    """Give spec.replicas to the autoscaler without a drop to 1, and never leave it at 0.

    An apply that stops setting a field we alone manage removes it, and defaulting then
    sets replicas to 1: turning autoscaling on would cut a 5-replica model to 1 first.
    Kubernetes' documented transfer: apply the current count under another field manager,
    then drop the field from ours. An HPA also does nothing at 0 replicas (KEDA's scale to
    zero, before a switch to the HPA): then the count starts at minReplicas.
    """
    autoscaling = md.spec.autoscaling
    uid = md.metadata.uid or ""
    if autoscaling is None or "replicas" in desired["spec"]:
        cache.replicas_released.pop(uid, None)
        return
    if cache.replicas_released.get(uid) == autoscaling.engine.value:
        return
    meta = desired["metadata"]
    if live is None:
        live = await kube.get("apps/v1", "deployments", meta["namespace"], meta["name"])
    if live is not None:
        count = int(live.get("spec", {}).get("replicas", 1))
        ours = _manages_replicas(live, cfg.field_manager)
        stuck_at_zero = count == 0 and autoscaling.engine.value == "hpa"
        if ours or stuck_at_zero:
            await kube.apply(
                {
                    "apiVersion": desired["apiVersion"],
                    "kind": desired["kind"],
                    "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                    "spec": {"replicas": max(count, autoscaling.min_replicas, 1)},
                },
                "deployments",
                field_manager=REPLICAS_HANDOVER_MANAGER,
            )
    cache.replicas_released[uid] = autoscaling.engine.value


def _manages_replicas(deployment: Mapping[str, Any], manager: str) -> bool:
    return any(
        entry.get("manager") == manager
        and "f:replicas" in (entry.get("fieldsV1") or {}).get("f:spec", {})
        for entry in deployment.get("metadata", {}).get("managedFields") or []
    )


def as_ready(verdict: Verdict) -> Verdict:
    """A Schedulable or AutoscalerReady verdict that also holds Ready back."""
    return replace(verdict, type="Ready")


async def _autoscaler_state(
    kube: KubeClient, md: ModelDeployment, applied: Mapping[str, Mapping[str, Any]]
) -> AutoscalerState:
    if md.spec.autoscaling is None:
        return AutoscalerState(
            None,
            None,
            Verdict(AUTOSCALER_READY, TRUE, "NotRequested", "replicas are set by spec.replicas"),
        )
    ref = expected_autoscaler(md)
    obj = applied.get(ref.kind) if ref else None
    hpa = None
    hpa_name = None
    if obj is not None and obj.get("kind") == "ScaledObject":
        hpa_name = keda_hpa_name(obj)
    elif obj is not None and obj.get("kind") == "HTTPScaledObject":
        hpa_name = http_add_on_hpa_name(obj)
    if hpa_name:
        hpa = await kube.get("autoscaling/v2", "horizontalpodautoscalers", md.namespace, hpa_name)
    return autoscaler_status(obj, hpa=hpa)


def _autoscaler_summary(
    md: ModelDeployment, state: AutoscalerState, before: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """status.autoscaler: the mode in force (the engine) and the replica counts.

    An unknown count is left out, or sent as null (which the merge patch deletes) only when
    the status still has one: a status read back then equals this, and needs no write.
    """
    if md.spec.autoscaling is None:
        return None
    summary: dict[str, Any] = {"mode": md.spec.autoscaling.engine.value}
    for key, value in (("currentReplicas", state.current), ("desiredReplicas", state.desired)):
        if value is not None or key in (before or {}):
            summary[key] = value
    return summary


# Ready reasons that come from reconcile itself, not from the Deployment: a Deployment
# event must not clear them.
RECONCILE_BLOCKERS = {
    "InvalidSpec",
    "OwnershipConflict",
    "Forbidden",
    "ApplyRejected",
    "KEDANotInstalled",
    "KEDAHTTPAddOnNotInstalled",
}


def status_from_deployment(
    body: Mapping[str, Any],
    deployment: Mapping[str, Any],
    cfg: OperatorConfig,
    *,
    now: str | None = None,
) -> dict[str, Any] | None:
    """The status after a child Deployment changed, without touching any child."""
    try:
        md = ModelDeployment.parse(dict(body))
    except InvalidSpec:
        return None
    previous = body.get("status") or {}
    ready = find_condition(previous, "Ready")
    blockers = []
    if ready is not None and ready.get("reason") in RECONCILE_BLOCKERS:
        blockers.append(
            Verdict("Ready", ready["status"], ready["reason"], ready.get("message", ""))
        )
    return status_for(
        previous,
        generation=previous.get("observedGeneration"),
        verdicts=[
            *deployment_verdicts(deployment),
            ready_verdict(deployment, blockers, autoscaled=bool(md.spec.autoscaling)),
        ],
        now=now or now_rfc3339(),
        deployment=deployment,
        url=url(md, cfg),
        autoscaler=previous.get("autoscaler"),
    )


async def _fetch_children(
    kube: KubeClient,
    md: ModelDeployment,
    wanted: set[tuple[str, str]],
    cache: ChildCache,
    *,
    always: bool = False,
) -> dict[tuple[str, str], dict[str, Any]]:
    """The children that need a look, fetched concurrently by their deterministic names,
    keyed by (kind, name).

    Without a startup inventory, on first sight of a ModelDeployment in this process: every
    possible child, even when it has no status yet (a process that died before its first
    status write may have created children the spec no longer wants). Otherwise: desired
    children we do not know to be ours (an object of that name may belong to someone else)
    and children we control but no longer want (to prune them). ``always``: the ``wanted``
    ones too (the canary is judged from their live status).
    """
    uid = md.metadata.uid or ""
    candidates = [
        (kind, child_name(md.name, suffix)) for kind in CHILD_KINDS for suffix in suffixes(kind)
    ]

    def ours(kind: ChildKind, name: str) -> bool:
        return cache.controls((kind.kind, md.namespace, name), uid)

    if cache.inventoried or uid in cache.visited:
        look = [
            (k, n)
            for k, n in candidates
            if ((k.kind, n) in wanted) != ours(k, n) or (always and (k.kind, n) in wanted)
        ]
    else:
        look = candidates
    found = await asyncio.gather(
        *(kube.get(k.api_version, k.plural, md.namespace, n) for k, n in look)
    )
    cache.visited.add(uid)
    existing = {
        (k.kind, n): obj
        for (k, n), obj in zip(look, found, strict=True)
        if obj and (obj.get("metadata") or {}).get("name", n) == n
    }
    for kind, name in look:
        key = (kind.kind, md.namespace, name)
        obj = existing.get((kind.kind, name))
        controller = controller_uid(obj) if obj else None
        if controller:
            cache.owners[key] = controller
        else:
            cache.owners.pop(key, None)
    return existing


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    return str(obj["kind"]), str(obj["metadata"]["name"])


def _canary_pod_selector(md: ModelDeployment) -> str:
    return ",".join(f"{k}={v}" for k, v in track_selector(md, CANARY).items())


KINDS_BY_NAME = {kind.kind: kind for kind in CHILD_KINDS}


async def _apply_failure(kube: KubeClient, kind: ChildKind, exc: ApiError) -> Verdict:
    """Turn an apply error into a condition; Unknown means retry later."""
    if exc.transient:
        return Verdict("Ready", UNKNOWN, "ApiUnavailable", exc.message)
    if exc.status == 404 and kind.optional and not await kube.api_available(kind.api_version):
        return as_ready(not_installed(kind.api_version))
    if exc.status == 403:
        return Verdict(
            "Ready",
            FALSE,
            "Forbidden",
            f"the operator may not apply {kind.plural}.{kind.group or 'core'}: {exc.message}",
        )
    return Verdict("Ready", FALSE, "ApplyRejected", f"{kind.kind}: {exc.message}")


__all__ = ["ChildCache", "ReconcileResult", "owned_by", "reconcile", "status_from_deployment"]
