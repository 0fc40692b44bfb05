"""kopf wiring: watches feed a work queue; the queue runs ``reconcile`` and writes status.

kopf gives us watch streams, in-memory indexes, login and the health endpoint. We use its
low-level event handlers only, so kopf adds no finalizer and no bookkeeping annotation to
ModelDeployments: deleting one never waits for the operator, even an uninstalled one.
Drift repair is event-driven: the watches on our children queue their ModelDeployment when
a child is deleted or a field we set changes (drift.py). Our own resync loop over the index
is the safety net for missed events and KEDA's ScaledObjects. Retries go through the
queue's per-object exponential backoff.

The memo carries the API client and the operator config, so tests can inject both.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import itertools
import logging
import zlib
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

import kopf

from . import api, coldstarts, credentials, metrics, rollout
from .config import OperatorConfig
from .drift import drifted
from .inventory import take_inventory
from .kube import ApiError, KubeClient
from .leadership import Leadership
from .operator_main import LOG_OBJECT
from .reconcile import ChildCache, ReconcileResult, reconcile, status_from_deployment
from .render import render
from .resources.autoscaling import autoscaler_status
from .resources.kinds import WATCHED_CHILD_KINDS, ChildKind
from .resources.labels import (
    CANARY,
    INSTANCE,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MANAGED_BY_SELECTOR,
    TRACK_LABEL,
)
from .resources.names import label_value
from .scheduling import NodeSummary, bound_devices, devices_in_use, node_summary, schedulable
from .status import DEPLOYMENT_READY_REASONS, conditions_equal, find_condition, now_rfc3339

logger = logging.getLogger(__name__)

MD = (api.GROUP, api.VERSION, api.PLURAL)
Key = tuple[str, str]


class RetryForever:
    """kopf's delays between attempts of a failing API call: 1, 2, 5, 10, then 30 s for ever.

    A finite list makes kopf give up after its last entry; for a watch that stops the whole
    operator (and kopf then SIGKILLs the process), so an API server outage of a minute, as
    in a control-plane upgrade, would take the operator down with it.
    """

    def __iter__(self) -> Iterator[float]:
        yield from (1.0, 2.0, 5.0, 10.0)
        yield from itertools.repeat(30.0)


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's last-handled state, for change-detection handlers, which we do not use.

    kopf deep-copies every body of every event twice to build and compare that state, about
    a quarter of the operator's CPU while it creates 1,000 ModelDeployments; and it would
    keep it in an annotation. Event handlers and indexes never read it.
    """

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass


# kopf logs each failed attempt of a watch request here, at ERROR.
KOPF_WATCH_LOGGER = "kopf._cogs.clients.watching"


class QuietForbiddenNodes(logging.Filter):
    """Drops kopf's retry errors for the Node watch once we know Nodes are forbidden.

    kopf retries a forbidden watch for ever (RetryForever), logging an ERROR each time, every
    30 s. Forbidden Nodes is a supported RBAC setup: the operator warns once and reports
    Schedulable Unknown/NodesForbidden, so the retries are noise that hides real errors.
    """

    def __init__(self, memo: kopf.Memo) -> None:
        super().__init__()
        self.memo = memo

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(self.memo, "nodes_forbidden", False):
            return True
        message = record.getMessage()
        return not ("/api/v1/nodes" in message and "APIForbiddenError" in message)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    settings.posting.level = logging.INFO
    settings.networking.error_backoffs = RetryForever()
    settings.persistence.diffbase_storage = NoDiffBase()
    for kind in WATCHED_CHILD_KINDS:
        # Filtered by the API server: the cluster's other ConfigMaps, Services and
        # Deployments never reach the operator.
        settings.watching.label_selectors[_selector(kind)] = MANAGED_BY_SELECTOR
    settings.watching.label_selectors[("v1", "pods")] = MANAGED_BY_SELECTOR
    if getattr(memo, "selector", ""):
        # A shard: other shards' ModelDeployments never reach the index, so nothing maps
        # their children to work here (child_event looks owners up in the index).
        settings.watching.label_selectors[(api.GROUP, api.PLURAL)] = memo.selector
    # The watched namespaces; empty: all of them.
    memo.namespaces = list(getattr(memo, "namespaces", None) or [])
    if memo.namespaces:
        # Namespaced RBAC grants no cluster-wide namespace or CRD listing to scan with.
        settings.scanning.disabled = True
    if not hasattr(memo, "config"):
        memo.config = OperatorConfig.from_env()
    memo.cache = ChildCache()
    # The task doing the lookups due before the first reconcile, once there is a client.
    memo.startup = None
    memo.nodes_forbidden = False
    # The generation each ModelDeployment's latest reconcile attempt saw.
    memo.failed_generation = {}
    # The last status written per ModelDeployment uid (we are its only writer).
    memo.written = {}
    # Uids the API server no longer has, though kopf's index may: after a watch gap kopf
    # lists again without a DELETED for what vanished meanwhile.
    memo.gone = set()
    # Keys queued from the index alone (resync, a child's deletion): confirm them first.
    memo.confirm = set()
    # Keys due a full reconcile; a queued key not in it only refreshes its status from
    # the Deployment body left in memo.deployment_changed (see _work).
    memo.full = set()
    memo.deployment_changed = {}
    # Model-server pods that became Ready, for status.lastColdStart and the histograms.
    memo.cold_starts = coldstarts.ColdStarts()
    # kopf's live index views; the queue's workers read them outside any handler.
    memo.model_deployments = kwargs["model_deployments_index"]
    # Node name -> NodeSummary, kept by node_event.
    memo.nodes = {}
    # (namespace, pod) -> (node, device requests) of bound model-server pods, kept by
    # pod_event: the canary's spare-GPU check (other workloads' pods are not watched).
    memo.gpu_pods = {}

    from .workqueue import WorkQueue

    memo.quiet_nodes = QuietForbiddenNodes(memo)
    logging.getLogger(KOPF_WATCH_LOGGER).addFilter(memo.quiet_nodes)

    # With leader election, a standby queues everything but works on nothing.
    memo.leadership = Leadership(memo)
    memo.queue = WorkQueue(lambda key: _work(key, memo), gate=memo.leadership.gate)
    memo.tasks = [
        asyncio.create_task(memo.queue.run(), name="kubeserve-workqueue"),
        asyncio.create_task(_resync(memo), name="kubeserve-resync"),
    ]
    memo.leadership.start(writers=memo.tasks[0])


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    if hasattr(memo, "quiet_nodes"):
        logging.getLogger(KOPF_WATCH_LOGGER).removeFilter(memo.quiet_nodes)
    for task in getattr(memo, "tasks", []):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if hasattr(memo, "leadership"):
        await memo.leadership.release()  # after the queue stopped: never two writers
    kube = getattr(memo, "kube", None)
    if kube is not None:
        await kube.close()


@kopf.on.login()
async def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo:
    # Tests connect to kmock through memo.connection; the operator logs in afresh each time.
    hook: kopf.ConnectionInfo | None = getattr(memo, "connection", None)
    info = hook or await credentials.login(**kwargs)
    kube: KubeClient | None = getattr(memo, "kube", None)
    if kube is None:
        memo.kube = KubeClient(info, refresh=lambda: credentials.login(**kwargs))
    elif hook is None:
        await kube.use(info)
    return info


# --- ModelDeployments -----------------------------------------------------------------


# Async, like every handler here: kopf runs a plain function in a thread pool, a thread
# handoff for each event.
@kopf.index(*MD)
async def model_deployments_index(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[Key, Any]:
    # managedFields are about half of a stored body, and nothing here reads them.
    meta = {k: v for k, v in body.get("metadata", {}).items() if k != "managedFields"}
    return {(namespace or "", name): {**body, "metadata": meta}}


@kopf.on.event(*MD)
async def model_deployment_event(
    type: str, namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    namespace = namespace or ""
    key = (namespace, name)
    if type == "DELETED":
        uid = body.get("metadata", {}).get("uid", "")
        memo.written.pop(uid, None)
        memo.cache.forget(uid)
        current = _indexed(memo, key)
        if current is None or current["metadata"].get("uid") == uid:
            # Not when a namesake already replaced it: the key's work is the new one's.
            memo.queue.forget(key)
            memo.full.discard(key)
            memo.deployment_changed.pop(key, None)
            memo.cold_starts.forget(key)
            memo.failed_generation.pop(key, None)
            metrics.forget(namespace, name)
        return
    status = body.get("status") or {}
    seen = body.get("metadata", {}).get("uid", "") in memo.cache.visited
    generation = body["metadata"].get("generation")
    if memo.queue.failures(key) and memo.failed_generation.get(key) == generation:
        # Failing, and this event (a watch replay, say) brings no new spec: its backoff
        # decides when to try again.
        return
    # Our own status writes come back as events: only new generations need work.
    if not seen or status.get("observedGeneration") != generation:
        _reconcile_soon(memo, key)


def _indexed(memo: kopf.Memo, key: Hashable) -> dict[str, Any] | None:
    """The ModelDeployment as kopf's index has it, with the status we last wrote.

    Our last status write may not have reached the index yet: starting from it, the same
    change is not written and announced twice, and a Deployment that became ready just
    after it is not mistaken for one whose owner was never reconciled.
    """
    index: kopf.Index[Hashable, Any] = memo.model_deployments
    if key not in index:
        return None
    body: dict[str, Any] = next(iter(index[key]))
    uid = body["metadata"].get("uid", "")
    if uid in memo.gone:
        return None
    if uid in memo.written:
        return {**body, "status": memo.written[uid]}
    return body


def _reconcile_soon(memo: kopf.Memo, key: Key, delay: float = 0.0) -> None:
    memo.full.add(key)
    memo.queue.add(key, delay=delay)


async def _work(key: Hashable, memo: kopf.Memo) -> None:
    """A full reconcile, or a status refresh when nothing but its Deployment's status or a
    pod's cold start moved."""
    full = key in memo.full or not (
        key in memo.deployment_changed or memo.cold_starts.has_pending(key)
    )
    memo.full.discard(key)
    deployment = memo.deployment_changed.pop(key, None)
    try:
        await _work_on(key, memo, full, deployment)
    except BaseException:
        if full:
            memo.full.add(key)  # the retry must apply the spec too, whatever came meanwhile
        raise


async def _work_on(
    key: Hashable, memo: kopf.Memo, full: bool, deployment: dict[str, Any] | None
) -> None:
    body = _indexed(memo, key)
    if body is None:
        return
    uid = body["metadata"].get("uid", "")
    kube: KubeClient = memo.kube
    # Log lines of this work (client retries, event posting, a failure the queue reports)
    # name the object. Left set when the attempt fails, for the queue's line; the next item
    # sets its own.
    LOG_OBJECT.set((str(key[0]), str(key[1])))  # type: ignore[index]
    result = None if full else _refreshed_status(memo, body, deployment)
    if result is None:
        result = await _reconcile(key, memo, body)
        if result is None:
            return
    result = _with_cold_start(memo, key, body, result)
    try:
        written = await _write_status(kube, body, result)
    except ApiError as exc:
        # 404: deleted. 409: the uid precondition failed (a namesake replaced it), or a
        # write conflict worth retrying: the live object tells which.
        if exc.status not in (404, 409) or await _still_there(kube, key, uid):
            raise
        logger.info("%s/%s is gone (%s); it is not reconciled again", *key, exc)  # type: ignore[misc]
        _forget_gone(memo, uid)
        return
    if written:
        memo.written[uid] = result.status
    if result.retry_after is not None:
        _reconcile_soon(memo, key, delay=result.retry_after)  # type: ignore[arg-type]


def _refreshed_status(
    memo: kopf.Memo, body: dict[str, Any], deployment: dict[str, Any] | None
) -> ReconcileResult | None:
    """The status after a Deployment change, without an apply; None: it needs a reconcile.

    Only while the Deployment alone decides Ready: Schedulable, the autoscaler or ownership
    are weighed by a reconcile. With no Deployment change (a cold start alone), the
    status stays as it is.
    """
    ready = find_condition(body.get("status"), "Ready")
    if ready is None:
        return None
    if deployment is None:
        return ReconcileResult(dict(body["status"]))
    if ready.get("reason") not in DEPLOYMENT_READY_REASONS:
        return None
    status = status_from_deployment(body, deployment, memo.config, now=now_rfc3339())
    return None if status is None else ReconcileResult(status)


def _with_cold_start(
    memo: kopf.Memo, key: Hashable, body: dict[str, Any], result: ReconcileResult
) -> ReconcileResult:
    """Record a pending cold start: the histograms, and the status if it is the latest."""
    starts = memo.cold_starts.take(key)
    namespace, name = str(key[0]), str(key[1])  # type: ignore[index]
    for start in starts:
        if memo.cold_starts.fresh(start):
            metrics.observe_cold_start(namespace, name, start.stages())
    if not starts or not coldstarts.newer(starts[-1], body.get("status")):
        return result
    latest = starts[-1].status()
    return dataclasses.replace(result, status={**result.status, "lastColdStart": latest})


async def _reconcile(
    key: Hashable, memo: kopf.Memo, body: dict[str, Any]
) -> ReconcileResult | None:
    """Apply the spec and compute the status; None when the object turned out to be gone."""
    uid = body["metadata"].get("uid", "")
    kube: KubeClient = memo.kube
    if memo.startup is None:
        memo.startup = asyncio.create_task(
            _before_first_reconcile(memo),
            name="kubeserve-startup",
            context=contextvars.Context(),  # its log lines are about no one object
        )
        memo.tasks.append(memo.startup)
    await asyncio.shield(memo.startup)
    if key in memo.confirm:
        memo.confirm.discard(key)
        if not await _still_there(kube, key, uid):
            _forget_gone(memo, uid)
            return None
    # Remembered in case this attempt fails: see model_deployment_event.
    memo.failed_generation[key] = body["metadata"].get("generation")
    try:
        with metrics.RECONCILE_SECONDS.time():
            result = await reconcile(
                body,
                kube,
                memo.config,
                nodes=_nodes(memo),
                cache=memo.cache,
                gpu_in_use=devices_in_use(getattr(memo, "gpu_pods", {}).values()),
            )
    except ApiError as exc:
        metrics.RECONCILES.labels("error").inc()
        metrics.RECONCILE_ERRORS.labels(f"http_{exc.status}" if exc.status else "connection").inc()
        raise
    metrics.RECONCILES.labels("ok").inc()
    return result


async def _still_there(kube: KubeClient, key: Hashable, uid: str) -> bool:
    namespace, name = str(key[0]), str(key[1])  # type: ignore[index]
    live = await kube.get(api.API_VERSION, api.PLURAL, namespace, name)
    return live is not None and live["metadata"].get("uid") == uid


def _forget_gone(memo: kopf.Memo, uid: str) -> None:
    """Forget a ModelDeployment the API server no longer has; its children are collected."""
    memo.gone.add(uid)
    memo.written.pop(uid, None)
    memo.cache.forget(uid)


async def _before_first_reconcile(memo: kopf.Memo) -> None:
    await _take_inventory(memo)
    await _check_node_access(memo)


async def _check_node_access(memo: kopf.Memo) -> None:
    """No Node seen means "none yet" or "not allowed": only the API server can tell."""
    try:
        memo.nodes_forbidden = not await memo.kube.may_list("v1", "nodes")
    except ApiError as exc:
        logger.warning("could not check access to Nodes (%s)", exc)
    if memo.nodes_forbidden:
        logger.warning(
            "the operator may not list Nodes: Schedulable is Unknown (NodesForbidden) for "
            "ModelDeployments with a GPU"
        )


async def _take_inventory(memo: kopf.Memo) -> None:
    """Before the first reconcile: see inventory.py. On failure, reconciles look up instead."""
    if any(set(namespace) & set("*?[!") for namespace in memo.namespaces):
        logger.info("no startup inventory: namespace patterns cannot be listed")
        return
    started = asyncio.get_running_loop().time()
    try:
        owners = await take_inventory(memo.kube, memo.namespaces or None)
    except ApiError as exc:
        logger.warning(
            "no startup inventory (%s): each ModelDeployment's first reconcile looks up "
            "all its child kinds instead",
            exc,
        )
        return
    memo.cache.owners.update(owners)
    memo.cache.inventoried = True
    elapsed = asyncio.get_running_loop().time() - started
    logger.info("startup inventory: %d children in %.1fs", len(owners), elapsed)


def _nodes(memo: kopf.Memo) -> list[NodeSummary] | None:
    """Known Nodes; None when the operator may not list them (and has seen none)."""
    summaries: list[NodeSummary] = list(memo.nodes.values())
    if not summaries and memo.nodes_forbidden:
        return None
    return summaries


async def _write_status(kube: KubeClient, body: dict[str, Any], result: ReconcileResult) -> bool:
    """Patch the status if it changed, then post the events; True when it was written."""
    meta = body["metadata"]
    old = dict(body.get("status") or {})
    new = result.status
    ready = next(c for c in new["conditions"] if c["type"] == "Ready")
    metrics.set_conditions(meta["namespace"], meta["name"], new["conditions"])
    metrics.set_replicas(meta["namespace"], meta["name"], new)
    if not _status_changed(old, new):
        return False
    await kube.patch_status(
        api.API_VERSION, api.PLURAL, meta["namespace"], meta["name"], new, uid=meta.get("uid")
    )
    # The log tells what changed for a user, once: a spec applied, an event, Ready moving.
    if old.get("observedGeneration") != new.get("observedGeneration"):
        logger.info("generation %s of the spec applied", new.get("observedGeneration"))
    if conditions_equal(old.get("conditions", []), new["conditions"]):
        return True
    now = now_rfc3339()
    for kind, reason, message in result.events:
        if kind == "Warning":
            metrics.RECONCILE_ERRORS.labels(reason).inc()
        logger.log(
            logging.WARNING if kind == "Warning" else logging.INFO, "%s: %s", reason, message
        )
        await kube.post_event(body, type=kind, reason=reason, message=message, now=now)
    old_ready = find_condition(old, "Ready")
    # A new ModelDeployment that is not ready yet is no news; a change of Ready is.
    was = old_ready["status"] if old_ready else "False"
    if was != ready["status"]:
        logger.info("Ready is %s (%s: %s)", ready["status"], ready["reason"], ready["message"])
        await kube.post_event(
            body,
            type="Normal" if ready["status"] == "True" else "Warning",
            reason=f"Ready{ready['status']}",
            message=f"{ready['reason']}: {ready['message']}",
            now=now,
        )
    return True


def _status_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    if not conditions_equal(old.get("conditions", []), new.get("conditions", [])):
        return True
    keys = ("observedGeneration", "replicas", "readyReplicas", "url", "autoscaler", "lastColdStart")
    return any(old.get(key) != new.get(key) for key in keys)


# Each resync reconcile is a few no-op applies: bound what drift repair costs the API server
# however many ModelDeployments there are (1,000 take 200 s at least).
RESYNC_MAX_PER_SECOND = 10.0


def resync_period(configured: float, count: int) -> float:
    # Work is spread over half the period, so a period of 2N/rate keeps to the rate.
    return max(configured, 2 * count / RESYNC_MAX_PER_SECOND)


async def _resync(memo: kopf.Memo) -> None:
    """Every resync period, queue every ModelDeployment: repairs drift and hand deletions."""
    index: kopf.Index[Key, Any] = memo.model_deployments
    period = memo.config.resync_seconds
    while True:
        await asyncio.sleep(period)
        period = resync_period(memo.config.resync_seconds, len(index))
        await _refresh_nodes(memo)
        for key in list(index):
            if memo.queue.failures(key):
                continue  # already due again after its backoff; never shorten a backoff
            # Spread the work over half the period instead of a thundering herd, with a
            # fixed offset per object: each one is resynced exactly once per period, so
            # drift is repaired within a period.
            memo.confirm.add(key)
            _reconcile_soon(memo, key, delay=_resync_offset(key, period))


async def _refresh_nodes(memo: kopf.Memo) -> None:
    """Nodes deleted during a watch gap leave no event: list them again once a period."""
    kube: KubeClient | None = getattr(memo, "kube", None)
    if kube is None or memo.nodes_forbidden:
        return
    try:
        listed = await kube.list("v1", "nodes")
    except ApiError as exc:
        logger.warning("could not list Nodes (%s)", exc)
        return
    memo.nodes = {node["metadata"]["name"]: node_summary(node) for node in listed}


def _resync_offset(key: Key, period: float) -> float:
    return zlib.crc32("/".join(key).encode()) % 1000 / 1000 * period / 2


# --- children --------------------------------------------------------------------------

# One repair per second at most: a burst of edits costs one reconcile, and another
# writer fighting over a field we set (a mutating webhook, a second controller) cannot
# pull the operator into a hot loop.
DRIFT_REPAIR_DELAY = 1.0


def _selector(kind: ChildKind) -> tuple[str, str] | tuple[str, str, str]:
    """kopf's resource selector: ("v1", plural) in the core group, (group, version, plural)."""
    if kind.group:
        return kind.group, kind.api_version.rpartition("/")[2], kind.plural
    return kind.api_version, kind.plural


async def child_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """A child we own changed: restore it at once if our fields drifted, refresh readiness.

    The resync would repair drift too, but only within its period (300 s by default).
    """
    owner = _owner(body)
    if owner is None:
        return
    # By namespace and name, as controller-runtime maps a child to its owner: a child of a
    # deleted namesake belongs to the key too, and its deletion frees the name.
    key = (body["metadata"]["namespace"], owner["name"])
    md = _indexed(memo, key)
    if md is None:
        return
    kind = body["kind"]
    # Log lines here are about the ModelDeployment (operator_main.log_object).
    about = {"k8s_ref": {"namespace": key[0], "name": key[1]}}
    if md["metadata"].get("uid") != owner.get("uid"):
        if type == "DELETED":
            _reconcile_soon(memo, key)
        return
    if (md.get("status") or {}).get("observedGeneration") is None:
        # Not reconciled yet, or its first reconcile runs now and may have read the
        # Deployment before this change: the queue runs it (again, after the running one).
        if kind == "Deployment" and (type == "DELETED" or _is_canary(body)):
            _reconcile_soon(memo, key)
        elif kind == "Deployment":
            _refresh_status_soon(memo, key, body)
        return
    if type == "DELETED":
        memo.cache.owners.pop((kind, key[0], body["metadata"]["name"]), None)
        memo.confirm.add(key)  # the owner may be gone too, its deletion unseen
        logger.info("%s %s was deleted; restoring it", kind, body["metadata"]["name"], extra=about)
        _reconcile_soon(memo, key)  # deleted by hand: restore it now, not at the next resync
        return
    if _drifted(md, body, memo.config):
        if (md.get("status") or {}).get("observedGeneration") == md["metadata"].get("generation"):
            # Not a spec change still being applied, but a hand edit or another writer.
            logger.info(
                "%s %s drifted from the spec; restoring it",
                kind,
                body["metadata"]["name"],
                extra=about,
            )
        _reconcile_soon(memo, key, delay=DRIFT_REPAIR_DELAY)
        return
    if kind == "HorizontalPodAutoscaler":
        if _autoscaler_view_changed(md, body):
            _reconcile_soon(memo, key)
        return
    if kind != "Deployment":
        return
    if _canary_involved(md, body):
        # The canary is judged by a reconcile (rollout.plan): its readiness moves the
        # weight, its deadline rolls it back, the stable's rollout ends a promotion.
        _reconcile_soon(memo, key, delay=CANARY_EVENT_DELAY)
        if _is_canary(body):
            return
    # Readiness lives on the Deployment.
    status = status_from_deployment(md, body, memo.config, now=now_rfc3339())
    old = md.get("status") or {}
    if status is not None and _deployment_view_changed(old, status):
        # A rollout moves a Deployment's status several times a second: one write for them
        # all, unless Ready changes, which `kubectl wait` and users wait for.
        urgent = _ready_status(old) != _ready_status(status)
        _refresh_status_soon(memo, key, body, delay=0.0 if urgent else STATUS_COALESCE_SECONDS)


# Canary Deployment and pod events that queue a reconcile share one within this delay.
CANARY_EVENT_DELAY = 0.5


def _is_canary(body: Mapping[str, Any]) -> bool:
    labels = (body.get("metadata") or {}).get("labels") or {}
    return labels.get(TRACK_LABEL) == CANARY


def _canary_involved(md: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    """A canary Deployment, or a stable one while a canary runs or is being promoted."""
    return (
        _is_canary(body)
        or bool((md.get("spec") or {}).get("canary"))
        or bool((md.get("status") or {}).get("canary"))
    )


# How long Deployment status changes that leave Ready as it is wait to share one write.
STATUS_COALESCE_SECONDS = 5.0


def _refresh_status_soon(
    memo: kopf.Memo, key: Key, deployment: kopf.Body, delay: float = 0.0
) -> None:
    """Queue a status refresh from this Deployment body; the children need no apply.

    Only the queue writes status: it posts the Ready events, and it never races a reconcile
    of the same object with a status built from a stale index entry.
    """
    memo.deployment_changed[key] = dict(deployment)
    memo.queue.add(key, delay=delay)


def _ready_status(status: dict[str, Any]) -> str | None:
    return (find_condition(status, "Ready") or {}).get("status")


for _kind in WATCHED_CHILD_KINDS:
    kopf.on.event(
        *_selector(_kind), id=f"child-{_kind.plural}", labels={MANAGED_BY_LABEL: MANAGED_BY}
    )(child_event)


def _drifted(md: dict[str, Any], child: kopf.Body, cfg: OperatorConfig) -> bool:
    """Whether the child lacks a field the ModelDeployment's current spec gives it."""
    try:
        desired = render(api.ModelDeployment.parse(md), cfg)
    except api.InvalidSpec:
        return False  # an invalid spec leaves every child as it is
    for obj in desired:
        if obj["kind"] == child["kind"] and obj["metadata"]["name"] == child["metadata"]["name"]:
            return drifted(child, obj)
    return False  # no longer wanted: the reconcile of the new spec prunes it


def _deployment_view_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether what a user sees of the Deployment changed: replicas, Available and Progressing
    turning, Ready's status or reason.

    A rollout rewrites the Deployment's condition messages and reasons many times ("ReplicaSet
    x is progressing"); those alone are not worth a write per ModelDeployment: the status
    carries the latest ones whenever it is written. Ready only while the Deployment alone
    decides it: reconcile weighs Ready against more (Schedulable, the autoscaler,
    ownership), and comparing such a Ready here would see a difference on every event and
    queue the object forever.
    """
    if any(old.get(key) != new.get(key) for key in ("replicas", "readyReplicas")):
        return True

    def view(status: dict[str, Any]) -> list[tuple[Any, ...]]:
        return sorted(
            (c.get("type"), c.get("status"), c.get("reason") if c["type"] == "Ready" else None)
            for c in status.get("conditions", [])
            if c.get("type") in ("Available", "Progressing")
            or (c.get("type") == "Ready" and c.get("reason") in DEPLOYMENT_READY_REASONS)
        )

    return view(old) != view(new)


def _autoscaler_view_changed(md: dict[str, Any], hpa: kopf.Body) -> bool:
    """Whether our HPA's own status changes what AutoscalerReady says."""
    verdict = autoscaler_status(hpa).condition
    current = find_condition(md.get("status"), verdict.type)
    return current is None or (current.get("status"), current.get("reason")) != (
        verdict.status,
        verdict.reason,
    )


def _owner(body: kopf.Body) -> dict[str, Any] | None:
    for ref in body.get("metadata", {}).get("ownerReferences", []):
        if ref.get("kind") == api.KIND and ref.get("apiVersion") == api.API_VERSION:
            return dict(ref)
    return None


# --- model-server pods (read-only, for cold starts) -------------------------------------


@kopf.on.event("v1", "pods", labels={MANAGED_BY_LABEL: MANAGED_BY})
async def pod_event(
    type: str | None, namespace: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """A model-server pod that became Ready: its cold start, for the queue to record."""
    pod_key = (namespace or "", str(body.get("metadata", {}).get("name", "")))
    held = None if type == "DELETED" else bound_devices(body)
    gpu_pods = getattr(memo, "gpu_pods", None)
    if gpu_pods is not None:
        if held is None:
            gpu_pods.pop(pod_key, None)
        else:
            gpu_pods[pod_key] = held
    if type == "DELETED":
        return
    owner = (body.get("metadata", {}).get("labels") or {}).get(INSTANCE)
    if owner is not None and _is_canary(body) and rollout.crash_loop([body]):
        # The canary Deployment may not show a crash loop: its pods do (rollback).
        key = _instance_key(memo, namespace or "", owner)
        if key is not None:
            _reconcile_soon(memo, key, delay=CANARY_EVENT_DELAY)
    start = coldstarts.cold_start(body)
    if start is None or owner is None:
        return
    key = _instance_key(memo, namespace or "", owner)
    if key is not None and memo.cold_starts.offer(key, start):
        memo.queue.add(key)


def _instance_key(memo: kopf.Memo, namespace: str, instance: str) -> Key | None:
    """The ModelDeployment whose pods carry this instance label (long names are shortened)."""
    if _indexed(memo, (namespace, instance)) is not None:
        return (namespace, instance)
    index: kopf.Index[Key, Any] = memo.model_deployments
    return next(
        (k for k in index if k[0] == namespace and label_value(str(k[1])) == instance), None
    )


# --- Nodes (read-only, for the Schedulable condition) -----------------------------------


@kopf.on.event("v1", "nodes")
async def node_event(
    type: str | None, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    """Keep the Node summaries; re-evaluate GPU ModelDeployments whose Schedulable changes.

    Not a kopf index: kopf runs no handler at all until every index is filled, so with
    Nodes forbidden no ModelDeployment would be reconciled before a resync.
    """
    if type == "DELETED":
        memo.nodes.pop(name, None)
    else:
        memo.nodes[name] = node_summary(body)
    summaries = _nodes(memo)
    index: kopf.Index[Key, Any] = memo.model_deployments
    for key in list(index):
        md = next(iter(index[key]))
        if not (md.get("spec") or {}).get("gpu"):
            continue
        current = find_condition(md.get("status"), "Schedulable")
        try:
            verdict = schedulable(api.ModelDeployment.parse(md), summaries, memo.config)
        except api.InvalidSpec:
            continue
        if current is None or (current["status"], current["reason"]) != (
            verdict.status,
            verdict.reason,
        ):
            _reconcile_soon(memo, key)
