"""The canary controller's decisions (docs/rollouts.md), pure and stateless.

Everything is judged from what the cluster shows: the live canary Deployment (its status,
its Progressing condition, the annotations the operator put on it), the canary pods'
containerStatuses, the live stable Deployment and the live HTTPRoute. A restarted operator
decides the same thing again; nothing lives in memory.

- Weight follows readiness: the canary's route weight is trafficPercent only while its
  Deployment has every desired pod available at its current generation, else 0.
- Rollback: ProgressDeadlineExceeded on the canary Deployment (``progressDeadlineSeconds``
  is set on it, the controller manager judges it), a crash-looping canary container
  (CrashLoopBackOff or restartCount >= CRASH_RESTARTS), or an analysis breach. The route's
  weight goes to 0 in the same apply that scales the canary to 0, and the route is applied
  first. The rolled-back pod shape is recorded in an annotation on the canary Deployment,
  so it is not retried until the canary's model, image, env or resources change.
- Promotion: spec.canary removed and the new stable pod shape equal to the live canary's:
  the canary objects are kept, with their weight, until the stable Deployment has rolled
  out its new generation; the stable's maxUnavailable is capped at the canary's Ready pods.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .api import CanaryState, ModelDeployment
from .config import OperatorConfig
from .resources.canary import (
    canary_replicas,
    canary_view,
    effective_percent,
    gateway_canary_replicas,
    traffic_text,
)
from .resources.gateway import mirror_problem, parent_ref
from .resources.labels import CANARY
from .resources.names import child_name
from .runtimes.base import SERVER_CONTAINER
from .status import FALSE, TRUE, UNKNOWN, Verdict

CANARY_READY = "CanaryReady"
SHAPE_ANNOTATION = "kubeserve.io/pod-shape"
ROLLED_BACK_ANNOTATION = "kubeserve.io/rolled-back"
ROLLBACK_CAUSE_ANNOTATION = "kubeserve.io/rollback-cause"
CRASH_RESTARTS = 3
# How soon to look again while weights or a promotion move (events come first; a fallback).
CANARY_RETRY_SECONDS = 10.0
SERVICE_MODE_NOTE = (
    "approximate split by ready pods; the Service's endpoints list only Ready pods, so a "
    "canary pod gets traffic only once Ready"
)


def pod_shape(md: ModelDeployment) -> str:
    """Hash of what shapes a model-server pod: model, image, env, resources.

    The canary's (``canary_view``) and, after a promotion, the stable's are comparable: a
    promotion is a stable whose shape is the live canary's.
    """
    spec = md.spec
    shape = {
        "model": spec.model.model_dump(by_alias=True, exclude_none=True),
        "image": spec.image,
        "env": [e.model_dump(by_alias=True, exclude_none=True) for e in spec.env or []]
        if spec.env is not None
        else None,
        "resources": spec.resources.model_dump(by_alias=True, exclude_none=True)
        if spec.resources is not None
        else None,
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:16]


def canary_shape(md: ModelDeployment) -> str:
    return pod_shape(canary_view(md))


@dataclass(frozen=True)
class Observed:
    """What the cluster shows of the canary and of the stable it is compared with."""

    canary: Mapping[str, Any] | None = None
    pods: Sequence[Mapping[str, Any]] = ()
    stable: Mapping[str, Any] | None = None
    route: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Plan:
    """What render() builds for the canary, and what status says about it."""

    # Whether render() builds the canary objects from spec.canary.
    render_canary: bool = False
    replicas: int = 0
    # The canary's route share in effect (0 until Ready).
    percent: int = 0
    mirror: bool = False
    shape: str = ""
    rolled_back: str | None = None  # the cause, recorded on the canary Deployment
    # Promotion or abort: keep the live canary objects (not rendered, not pruned).
    keep: bool = False
    stable_max_unavailable: int | None = None
    verdict: Verdict | None = None
    status: dict[str, Any] | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)
    retry_after: float | None = None


def gateway_mode(md: ModelDeployment, cfg: OperatorConfig) -> bool:
    return parent_ref(md, cfg) is not None


def annotations_of(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


def deployment_complete(obj: Mapping[str, Any] | None) -> bool:
    """Every desired pod runs the current template and is available (kubectl rollout status)."""
    if obj is None:
        return False
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    desired = int(spec.get("replicas", 1))
    generation = (obj.get("metadata") or {}).get("generation")
    if generation is not None and int(status.get("observedGeneration", 0)) < generation:
        return False
    return (
        int(status.get("updatedReplicas", 0)) >= desired
        and int(status.get("availableReplicas", 0)) >= desired
        and int(status.get("replicas", 0)) <= desired
    )


def available(obj: Mapping[str, Any] | None) -> int:
    return int(((obj or {}).get("status") or {}).get("availableReplicas", 0))


def deadline_exceeded(obj: Mapping[str, Any] | None) -> bool:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return True
    return False


def crash_loop(pods: Sequence[Mapping[str, Any]]) -> str | None:
    """The first crash-looping canary container, described; None when none loops."""
    for pod in pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting") or {}
            restarts = int(status.get("restartCount", 0))
            if waiting.get("reason") == "CrashLoopBackOff" or restarts >= CRASH_RESTARTS:
                name = (pod.get("metadata") or {}).get("name", "?")
                return (
                    f"container {status.get('name', SERVER_CONTAINER)} of pod {name} is "
                    f"crash-looping ({waiting.get('reason') or 'restarting'}, "
                    f"{restarts} restarts)"
                )
    return None


def rollback_cause(
    md: ModelDeployment,
    live: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    breach: str | None,
) -> str | None:
    canary = md.spec.canary
    assert canary is not None
    if live is not None and deadline_exceeded(live):
        return (
            f"not Ready within progressDeadlineSeconds ({canary.progress_deadline_seconds}s): "
            "ProgressDeadlineExceeded"
        )
    looping = crash_loop(pods)
    if looping:
        return looping
    if breach:
        return f"analysis breached: {breach}"
    return None


def stable_replicas(md: ModelDeployment, stable: Mapping[str, Any] | None) -> int:
    """The stable's pod count: spec.replicas, or what the autoscaler set on the Deployment."""
    if md.spec.autoscaling is None:
        return md.spec.replicas
    live = ((stable or {}).get("spec") or {}).get("replicas")
    return int(live) if live is not None else md.spec.autoscaling.min_replicas


def route_canary_weight(route: Mapping[str, Any] | None, md_name: str) -> int:
    """The canary's share on the live route: its weight, or its mirror percent."""
    canary = child_name(md_name, CANARY)
    for rule in ((route or {}).get("spec") or {}).get("rules") or []:
        refs = rule.get("backendRefs") or []
        total = sum(int(ref.get("weight", 1)) for ref in refs) or 1
        for ref in refs:
            if ref.get("name") == canary:
                return round(100 * int(ref.get("weight", 1)) / total)
        for flt in rule.get("filters") or []:
            mirror = flt.get("requestMirror") or {}
            if (mirror.get("backendRef") or {}).get("name") == canary:
                return int(mirror.get("percent", 100))
    return 0


def plan(
    md: ModelDeployment,
    cfg: OperatorConfig,
    observed: Observed,
    *,
    breach: str | None = None,
    previous: Mapping[str, Any] | None = None,
) -> Plan:
    """The canary's desired state from the spec and what the cluster shows.

    ``breach``: the analysis verdict's message when it breached (unknown counts as no
    breach). ``previous``: the ModelDeployment's status, for a CanaryReady to clear.
    """
    if md.spec.canary is None:
        return _no_canary(md, cfg, observed, previous)
    canary = md.spec.canary
    gateway = gateway_mode(md, cfg)
    mode = "gateway" if gateway else "service"
    problem = mirror_problem(md, cfg)
    if problem:
        verdict = Verdict(CANARY_READY, FALSE, "MirrorNeedsGateway", problem)
        return Plan(
            verdict=verdict,
            status=_status(CanaryState.PENDING, 0, mode, canary.traffic_percent, message=problem),
            keep=False,
        )
    shape = canary_shape(md)
    live = observed.canary
    live_shape = annotations_of(live).get(SHAPE_ANNOTATION)
    current = live is not None and live_shape == shape
    stable_count = stable_replicas(md, observed.stable)
    if canary.replicas is not None:
        sized = canary.replicas
    elif gateway:
        sized = gateway_canary_replicas(stable_count, canary.traffic_percent)
    else:
        sized = canary_replicas(stable_count, canary.traffic_percent)

    cause: str | None = None
    fresh = False
    if current and annotations_of(live).get(ROLLED_BACK_ANNOTATION) == shape:
        cause = annotations_of(live).get(ROLLBACK_CAUSE_ANNOTATION, "rolled back")
    elif current:
        cause = rollback_cause(md, live, observed.pods, breach)
        fresh = cause is not None
    if cause is not None:
        message = (
            f"rolled back: {cause}; all traffic on stable, canary scaled to 0. It is retried "
            "when canary.model, image, env or resources change"
        )
        events = [("Warning", "CanaryRolledBack", message)] if fresh else []
        return Plan(
            render_canary=True,
            replicas=0,
            percent=0,
            mirror=canary.mirror,
            shape=shape,
            rolled_back=cause,
            verdict=Verdict(CANARY_READY, FALSE, "RolledBack", message),
            status=_status(
                CanaryState.ROLLED_BACK,
                0,
                mode,
                canary.traffic_percent,
                shape=shape,
                replicas=0,
                ready=available(live),
                message=message,
            ),
            events=events,
        )

    ready_pods = available(live) if current else 0
    all_ready = current and sized > 0 and deployment_complete(live)
    if gateway:
        percent = canary.traffic_percent if all_ready else 0
        approximate = False
    else:
        stable_ready = available(observed.stable)
        percent = effective_percent(stable_ready, ready_pods)
        approximate = True
    if sized == 0 or all_ready:
        state = CanaryState.WEIGHTED
    elif ready_pods > 0:
        state = CanaryState.PROGRESSING
    else:
        state = CanaryState.PENDING
    shown = traffic_text(percent, mirror=canary.mirror)
    if state == CanaryState.WEIGHTED:
        note = f"{shown} in effect"
        if not gateway:
            note += f" ({SERVICE_MODE_NOTE})"
        verdict = Verdict(CANARY_READY, TRUE, "Serving" if gateway else "ServingApproximate", note)
        retry = None
    else:
        note = f"{ready_pods}/{sized} canary pods Ready; " + (
            "weight 0 until every canary pod is Ready" if gateway else SERVICE_MODE_NOTE
        )
        verdict = Verdict(CANARY_READY, FALSE, "Progressing", note)
        retry = CANARY_RETRY_SECONDS
    return Plan(
        render_canary=True,
        replicas=sized,
        percent=percent,
        mirror=canary.mirror,
        shape=shape,
        verdict=verdict,
        status=_status(
            state,
            percent,
            mode,
            canary.traffic_percent,
            shape=shape,
            replicas=sized,
            ready=ready_pods,
            message=note,
            approximate=approximate,
            mirror=canary.mirror,
        ),
        retry_after=retry,
    )


def _no_canary(
    md: ModelDeployment,
    cfg: OperatorConfig,
    observed: Observed,
    previous: Mapping[str, Any] | None,
) -> Plan:
    """spec.canary is gone: a promotion (keep the canary until the new stable is out), an
    abort, or no canary at all. The canary objects are pruned only once the route no longer
    sends them anything (weight first)."""
    live = observed.canary
    had = any(c.get("type") == CANARY_READY for c in (previous or {}).get("conditions") or [])
    mode = "gateway" if gateway_mode(md, cfg) else "service"
    weight = route_canary_weight(observed.route, md.name)
    rolled_back = annotations_of(live).get(ROLLED_BACK_ANNOTATION)
    promoting = (
        live is not None
        and not rolled_back
        and annotations_of(live).get(SHAPE_ANNOTATION) == pod_shape(md)
        and available(live) > 0
    )
    if promoting and not deployment_complete(observed.stable):
        message = (
            "promoting: the stable Deployment rolls to the canary's shape; the canary keeps "
            f"serving ({available(live)} pods Ready) until it is complete"
        )
        return Plan(
            keep=True,
            percent=weight,
            stable_max_unavailable=available(live),
            verdict=Verdict(CANARY_READY, TRUE, "Promoting", message),
            status=_status(
                CanaryState.PROMOTING,
                weight,
                mode,
                weight,
                replicas=int(((live or {}).get("spec") or {}).get("replicas", 0)),
                ready=available(live),
                message=message,
            ),
            retry_after=CANARY_RETRY_SECONDS,
        )
    if live is not None and weight > 0:
        # Promoted or aborted: traffic back to stable first, the canary goes next time.
        return Plan(
            keep=True,
            percent=0,
            verdict=Verdict(
                CANARY_READY, FALSE, "Removing", "all traffic to stable; the canary goes next"
            ),
            status=None,
            retry_after=1.0,
        )
    if live is None and not had:
        return Plan()
    reason = "Promoted" if promoting else "NoCanary"
    return Plan(
        verdict=Verdict(
            CANARY_READY,
            FALSE,
            reason,
            "the canary was promoted: stable runs its shape"
            if promoting
            else "spec.canary is not set",
        ),
        status=None,
    )


def _status(
    state: CanaryState,
    percent: int,
    mode: str,
    requested: int,
    *,
    shape: str | None = None,
    replicas: int | None = None,
    ready: int | None = None,
    message: str = "",
    approximate: bool = False,
    mirror: bool = False,
) -> dict[str, Any]:
    """status.canary (api.CanaryStatus)."""
    status: dict[str, Any] = {
        "state": state.value,
        "traffic": traffic_text(percent, mirror=mirror),
        "trafficPercent": 0 if mirror else percent,
        "mode": mode,
        "approximate": approximate or (mode == "service" and percent != requested),
        "message": message,
    }
    if mirror:
        status["mirrorPercent"] = percent
    if replicas is not None:
        status["replicas"] = replicas
    if ready is not None:
        status["readyReplicas"] = ready
    if shape:
        status["templateHash"] = shape
    return status


# --- analysis: the hook for operator/kubeserve/analysis.py ------------------------------


def analysis_wait(md: ModelDeployment, previous: Mapping[str, Any] | None, now: str) -> float:
    """Seconds until the next analysis is due (0: now): one check per intervalSeconds.

    The last check's time lives in status.canary.lastAnalysisTime (RFC 3339), so a restart or
    an unrelated event does not check again early. A time in the future (clock skew) or
    unreadable counts as due.
    """
    canary = md.spec.canary
    if canary is None or canary.analysis is None:
        return 0.0
    last = ((previous or {}).get("canary") or {}).get("lastAnalysisTime")
    if not last:
        return 0.0
    try:
        then = datetime.fromisoformat(str(last).replace("Z", "+00:00"))
        current = datetime.fromisoformat(now.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    elapsed = (current - then).total_seconds()
    if elapsed < 0:
        return 0.0
    return max(canary.analysis.interval_seconds - elapsed, 0.0)


async def analysis_breach(
    md: ModelDeployment, cfg: OperatorConfig, previous: Mapping[str, Any] | None = None
) -> tuple[str | None, int | None]:
    """(the breach message when analysis.failureLimit consecutive checks breached, else None;
    the consecutive breach count for status.canary.analysisFailures).

    None, None when spec.canary.analysis is unset. analysis.evaluate answers ok, breach or
    unknown; unknown keeps the count and never rolls back. The count lives in the status, so
    a restarted operator goes on counting where it was.
    """
    canary = md.spec.canary
    if canary is None or canary.analysis is None:
        return None, None
    from . import analysis  # the analysis engineer's module; imported only when used

    before = int(((previous or {}).get("canary") or {}).get("analysisFailures") or 0)
    import aiohttp

    async with aiohttp.ClientSession() as session:
        verdict = await analysis.evaluate(md, cfg.prometheus_url, session)
    failures = analysis.next_failures(before, verdict)
    if analysis.rolls_back(md, failures):
        return verdict.message or "threshold breached", failures
    return None, failures


__all__ = [
    "CANARY_READY",
    "UNKNOWN",
    "Observed",
    "Plan",
    "analysis_breach",
    "analysis_wait",
    "canary_shape",
    "plan",
    "pod_shape",
]
