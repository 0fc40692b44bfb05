"""One idempotent reconcile for create, update, resume and the drift-repair timer.

desired = render(md, config); apply what we own; prune what we own and no longer want;
compute the status. There are no kopf imports here: handlers.py adapts kopf to this.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .api import API_VERSION, InvalidSpec, ModelDeployment
from .config import OperatorConfig
from .kube import ApiError, KubeClient
from .render import render
from .resources.kinds import CHILD_KINDS, ChildKind, kind_of
from .resources.names import child_name
from .resources.service import url
from .status import (
    FALSE,
    TRUE,
    UNKNOWN,
    Verdict,
    deployment_verdicts,
    invalid_spec_verdicts,
    now_rfc3339,
    ready_verdict,
    status_for,
    valid_spec_verdict,
)

logger = logging.getLogger(__name__)


@dataclass
class ReconcileResult:
    status: dict[str, Any]
    # Human-facing events: (type Normal|Warning, reason, message).
    events: list[tuple[str, str, str]] = field(default_factory=list)


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences", [])
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


async def reconcile(
    body: Mapping[str, Any],
    kube: KubeClient,
    cfg: OperatorConfig,
    *,
    nodes: Iterable[Mapping[str, Any]] | None = None,
    now: str | None = None,
) -> ReconcileResult:
    now = now or now_rfc3339()
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
    existing = await _fetch_children(kube, md)
    blockers: list[Verdict] = []
    events: list[tuple[str, str, str]] = []
    applied: dict[str, dict[str, Any]] = {}

    autoscaler_verdict: Verdict | None = None
    for obj in desired:
        kind = kind_of(obj)
        current = existing.get(kind.kind)
        if current is not None and not owned_by(current, uid):
            message = (
                f"{kind.kind} {obj['metadata']['name']} exists and is not owned by this "
                "ModelDeployment; it is left untouched. Delete or rename it."
            )
            blockers.append(Verdict("Ready", FALSE, "OwnershipConflict", message))
            continue
        try:
            applied[kind.kind] = await kube.apply(obj, kind.plural, field_manager=cfg.field_manager)
        except ApiError as exc:
            verdict = await _apply_failure(kube, kind, exc)
            if kind.optional and verdict.reason == "KEDANotInstalled":
                autoscaler_verdict = Verdict(
                    "AutoscalerReady", FALSE, verdict.reason, verdict.message
                )
                blockers.append(autoscaler_verdict)
                continue
            if verdict.status == UNKNOWN:
                raise
            blockers.append(verdict)

    wanted = {kind_of(obj).kind for obj in desired}
    for kind in CHILD_KINDS:
        stale = existing.get(kind.kind)
        if kind.kind in wanted or stale is None or not owned_by(stale, uid):
            continue
        await kube.delete(
            kind.api_version,
            kind.plural,
            md.namespace,
            stale["metadata"]["name"],
            uid=stale["metadata"]["uid"],
        )
        events.append(("Normal", "Pruned", f"deleted {kind.kind} {stale['metadata']['name']}"))

    deployment = applied.get("Deployment", existing.get("Deployment"))
    verdicts = [valid_spec_verdict(), *deployment_verdicts(deployment)]
    if autoscaler_verdict is None:
        autoscaler_verdict = _autoscaler_verdict(md, applied)
    verdicts.append(autoscaler_verdict)
    verdicts.append(ready_verdict(deployment, blockers))
    status = status_for(
        previous,
        generation=generation,
        verdicts=verdicts,
        now=now,
        deployment=deployment,
        url=url(md, cfg),
    )
    events.extend(("Warning", b.reason, b.message) for b in blockers)
    return ReconcileResult(status, events)


# Ready reasons that come from reconcile itself, not from the Deployment: a Deployment
# event must not clear them.
RECONCILE_BLOCKERS = {
    "InvalidSpec",
    "OwnershipConflict",
    "Forbidden",
    "ApplyRejected",
    "KEDANotInstalled",
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
    ready = next((c for c in previous.get("conditions", []) if c.get("type") == "Ready"), None)
    blockers = []
    if ready is not None and ready.get("reason") in RECONCILE_BLOCKERS:
        blockers.append(
            Verdict("Ready", ready["status"], ready["reason"], ready.get("message", ""))
        )
    return status_for(
        previous,
        generation=previous.get("observedGeneration"),
        verdicts=[*deployment_verdicts(deployment), ready_verdict(deployment, blockers)],
        now=now or now_rfc3339(),
        deployment=deployment,
        url=url(md, cfg),
        autoscaler=previous.get("autoscaler"),
    )


async def _fetch_children(kube: KubeClient, md: ModelDeployment) -> dict[str, dict[str, Any]]:
    """Every child we could own, fetched concurrently by its deterministic name."""
    name = child_name(md.name)

    async def fetch(kind: ChildKind) -> dict[str, Any] | None:
        return await kube.get(kind.api_version, kind.plural, md.namespace, name)

    found = await asyncio.gather(*(fetch(kind) for kind in CHILD_KINDS))
    return {kind.kind: obj for kind, obj in zip(CHILD_KINDS, found, strict=True) if obj}


async def _apply_failure(kube: KubeClient, kind: ChildKind, exc: ApiError) -> Verdict:
    """Turn an apply error into a condition; Unknown means retry later."""
    if exc.transient:
        return Verdict("Ready", UNKNOWN, "ApiUnavailable", exc.message)
    if exc.status == 404 and kind.optional and not await kube.api_available(kind.api_version):
        return Verdict(
            "Ready",
            FALSE,
            "KEDANotInstalled",
            f"engine keda needs the {kind.api_version} API (KEDA's CRDs); install KEDA or "
            "use engine hpa",
        )
    if exc.status == 403:
        return Verdict(
            "Ready",
            FALSE,
            "Forbidden",
            f"the operator may not apply {kind.plural}.{kind.group or 'core'}: {exc.message}",
        )
    return Verdict("Ready", FALSE, "ApplyRejected", f"{kind.kind}: {exc.message}")


def _autoscaler_verdict(md: ModelDeployment, applied: Mapping[str, Mapping[str, Any]]) -> Verdict:
    if md.spec.autoscaling is None:
        return Verdict("AutoscalerReady", TRUE, "NotRequested", "replicas are set by spec.replicas")
    obj = applied.get("HorizontalPodAutoscaler") or applied.get("ScaledObject")
    if obj is None:
        return Verdict("AutoscalerReady", UNKNOWN, "NotApplied", "the autoscaler was not applied")
    for condition in obj.get("status", {}).get("conditions", []):
        if condition.get("type") in {"AbleToScale", "Ready"} and condition.get("status") == FALSE:
            return Verdict(
                "AutoscalerReady",
                FALSE,
                condition.get("reason", "NotReady"),
                condition.get("message", ""),
            )
    return Verdict("AutoscalerReady", TRUE, "Applied", f"{obj['kind']} {obj['metadata']['name']}")


__all__ = ["API_VERSION", "ReconcileResult", "owned_by", "reconcile", "status_from_deployment"]
