"""API faults on every kind of call: the operator retries with bounded backoff and converges.

Faults are answered by FaultyEmulator before kmock changes any state (a refused request),
except in ``test_lost_responses_*``, which use kmock's own DSL (``kmock[...] << 503``): kmock
stores the change and then answers with the error, as when a response is lost after the
server committed the write.

Request bound: one reconcile costs at most C requests (7 child GETs on first sight, one apply
per child, the KEDA discovery and HPA lookups, one status patch, up to 4 events). A fault
either costs one extra request (the client retries it: 4 attempts) or aborts one reconcile
(retried later by the work queue), so a run with F injected faults may take at most
(R + F) x C operator requests, where R bounds the reconciles of a clean run (the first, the
one its own Deployment event causes, one per resync period). A hot loop would blow through
this within seconds of fake time.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from kmock_harness import NAMESPACE, Api, eventually, model_deployment
from rel_harness import (
    OPERATOR_UA,
    Fault,
    FaultyEmulator,
    condition,
    converged,
    desired_children,
    is_apply,
    live,
    md_object,
    operator,
    requests_by,
)
from rel_settings import bound, count

from kubeserve.config import OperatorConfig
from kubeserve.kube import RetryPolicy

pytestmark = [pytest.mark.kmock(cls=FaultyEmulator), pytest.mark.looptime]

MD_PATH = r"/modeldeployments/mnist"
CONFIG = OperatorConfig()
# Per-reconcile request budget for the test object (3 children); see the module docstring.
CHILD_GETS = 7


def reconcile_cost(body: dict[str, Any]) -> int:
    return CHILD_GETS + len(desired_children(body)) + 2 + 1 + 4


# name -> (method, path regex, client); every call the operator makes, and kopf's list.
TARGETS: dict[str, tuple[str, str, str]] = {
    "child-get": ("GET", r"/deployments/mnist$", OPERATOR_UA),
    "child-apply": ("PATCH", r"/deployments/mnist$", OPERATOR_UA),
    "service-apply": ("PATCH", r"/services/mnist$", OPERATOR_UA),
    "status-patch": ("PATCH", MD_PATH + r"/status$", OPERATOR_UA),
    "event-post": ("POST", r"/events$", OPERATOR_UA),
    "kopf-list": ("GET", r"/modeldeployments$", "kopf"),
}
# name -> (status, Retry-After)
FAULTS: dict[str, tuple[int, float | None]] = {
    "409": (409, None),
    "429": (429, 3.0),
    "500": (500, None),
    "503": (503, None),
    "timeout": (0, None),
}
# 6 in a row outlasts the client's 4 attempts, so the work queue's retry is exercised too;
# 2 in a row is absorbed by the client's own retry.
# The API server answers 409 only to writes; kopf (rightly) does not retry a 409 on a list.
MATRIX = [
    (target, fault, 6)
    for target in TARGETS
    for fault in FAULTS
    if not (target == "kopf-list" and fault == "409")
] + [("child-apply", fault, 2) for fault in FAULTS]


async def run_until_converged(
    kmock: Any, body: dict[str, Any], *, timeout: float = 900
) -> tuple[float, int]:
    """Create ``body``; once its Deployment exists, the "Deployment controller" reports it
    ready; wait until the children are right and Ready is True.

    Returns (fake seconds taken, operator requests)."""
    loop = asyncio.get_running_loop()
    api = Api(str(kmock.url))
    async with operator(kmock, CONFIG):
        start = loop.time()
        await api.create_md(body)
        await eventually(lambda: ("Deployment", "mnist") in live(kmock), timeout=timeout)
        await mark_ready(api)
        await eventually(lambda: ready(kmock, body), timeout=timeout, step=0.5)
        took = loop.time() - start
        # Let the in-flight work (events after the status patch) finish, then re-check.
        await asyncio.sleep(10)
        assert ready(kmock, body)
    return took, len(requests_by(kmock))


def ready(kmock: Any, body: dict[str, Any]) -> bool:
    ready_condition = condition(md_object(kmock), "Ready")
    return converged(kmock, body) and (ready_condition or {}).get("status") == "True"


async def mark_ready(api: Api, name: str = "mnist", replicas: int = 2) -> None:
    """What the Deployment controller would write once the pods are up."""
    await api.request(
        "PATCH",
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}/status",
        {
            "status": {
                "observedGeneration": 1,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                ],
            }
        },
    )


def assert_no_duplicates(kmock: FaultyEmulator, body: dict[str, Any]) -> None:
    creations = {k: n for k, n in kmock.created.items() if k[0] != "events"}
    assert all(n == 1 for n in creations.values()), creations
    assert not [r for r in requests_by(kmock) if r.method.value == "DELETE"], "nothing to prune"
    desired = {(c["kind"], c["metadata"]["name"]) for c in desired_children(body)}
    assert set(live(kmock)) == desired


@pytest.mark.parametrize(("target", "fault", "times"), MATRIX)
async def test_operator_converges_through_faults(
    cluster: FaultyEmulator, target: str, fault: str, times: int
) -> None:
    method, path, client = TARGETS[target]
    status, retry_after = FAULTS[fault]
    cluster.inject(Fault(method, path, status, times=times, retry_after=retry_after, client=client))
    body = model_deployment(replicas=2)

    took, requests = await run_until_converged(cluster, body)

    injected = len(cluster.injected)
    count("faults injected (refused before kmock stores anything)", injected)
    if target == "event-post":
        # Events are best effort: a lost one is logged, not retried by a later reconcile.
        assert 1 <= injected <= times
    else:
        assert injected == times, "every planned fault was hit"
    assert_no_duplicates(cluster, body)
    resyncs = int(took // CONFIG.resync_seconds) + 1
    limit = (3 + resyncs + injected) * reconcile_cost(body)
    bound(f"requests, {injected} x {fault} on {target}", requests, limit)
    assert requests <= limit, f"{requests} requests for {injected} faults (bound {limit})"


async def test_retry_after_is_honoured(cluster: FaultyEmulator) -> None:
    loop = asyncio.get_running_loop()
    seen: list[float] = []

    async def stamp(request: Any) -> None:
        if request.method.value == "PATCH" and request.url.path.endswith("/deployments/mnist"):
            seen.append(loop.time())

    cluster.hooks.append(stamp)
    cluster.inject(Fault("PATCH", r"/deployments/mnist$", 429, times=2, retry_after=7))
    body = model_deployment()
    await run_until_converged(cluster, body)
    gaps = [b - a for a, b in itertools.pairwise(seen)][:2]
    assert len(gaps) == 2
    assert all(gap >= 7 for gap in gaps), gaps


async def test_retry_after_is_capped(cluster: FaultyEmulator) -> None:
    """A hostile Retry-After (a day) must not park the operator for a day."""
    cluster.inject(Fault("PATCH", r"/deployments/mnist$", 429, times=1, retry_after=86400))
    body = model_deployment()
    took, _ = await run_until_converged(cluster, body, timeout=120)
    assert took <= RetryPolicy().max_delay + 5


async def test_permanent_fault_is_retried_with_backoff_not_a_hot_loop(
    cluster: FaultyEmulator,
) -> None:
    """503 on every Deployment apply for half an hour of fake time: bounded attempts."""
    window = 1800.0
    cluster.inject(Fault("PATCH", r"/deployments/mnist$", 503, times=None))
    async with operator(cluster, CONFIG):
        await Api(str(cluster.url)).create_md(model_deployment())
        await asyncio.sleep(window)
    applies = [r for r in requests_by(cluster) if is_apply(r) and "deployments" in r.url.path]
    # Work-queue backoff 2, 4, 8, ... 256, then the 300 s cap: 8 attempts in the first
    # 510 s, then one per 300 s: 13 reconciles in 1800 s, each trying the apply
    # RetryPolicy.attempts (4) times. Resyncs and watch replays add none while it backs
    # off (before the fix: one per resync and per replay, 107 an hour).
    attempts = RetryPolicy().attempts
    bound("applies under a permanent 503, 1800 s", len(applies), 14 * attempts)
    assert 12 * attempts <= len(applies) <= 14 * attempts, len(applies)
    total = len(requests_by(cluster))
    bound("requests under a permanent 503, 1800 s", total, 14 * (attempts + CHILD_GETS + 4))
    assert total <= 14 * (attempts + CHILD_GETS + 4), total


async def test_lost_responses_after_commit_still_converge(cluster: FaultyEmulator) -> None:
    """kmock's DSL: the apply is stored, then answered 503 (twice) or 500 (twice)."""
    deployments = cluster.resource("apps/v1/deployments")
    services = cluster.resource("v1/services")
    cluster["patch", deployments, {"User-Agent": OPERATOR_UA}][:2] << 503
    cluster["patch", services, {"User-Agent": OPERATOR_UA}][:2] << 500
    body = model_deployment(replicas=2)
    took, requests = await run_until_converged(cluster, body)
    assert_no_duplicates(cluster, body)
    count("responses lost after commit (kmock DSL)", 4)
    limit = (3 + 4 + int(took // CONFIG.resync_seconds)) * reconcile_cost(body)
    bound("requests, 4 responses lost after commit", requests, limit)
    assert requests <= limit


async def test_conflict_on_every_call_for_a_while(cluster: FaultyEmulator) -> None:
    """409 on every write for 5 minutes (another writer keeps winning): converges after."""
    for method in ("PATCH", "POST", "DELETE"):
        cluster.inject(Fault(method, r".", 409, times=None))
    async with operator(cluster, CONFIG):
        await Api(str(cluster.url)).create_md(body := model_deployment(replicas=2))
        await asyncio.sleep(300)
        during = len(requests_by(cluster))
        cluster.faults.clear()
        await eventually(lambda: converged(cluster, body), timeout=400, step=0.5)
        await asyncio.sleep(10)
    assert_no_duplicates(cluster, body)
    count("faults injected (refused before kmock stores anything)", len(cluster.injected))
    # Backoff 2..256 s within 300 s: at most 9 reconciles before the faults clear.
    bound("requests during 300 s of 409 on every write", during, 9 * reconcile_cost(body) + 20)
    assert during <= 9 * reconcile_cost(body) + 20, during


def test_matrix_covers_every_fault_on_every_call() -> None:
    every = {(t, f) for t in TARGETS for f in FAULTS} - {("kopf-list", "409")}
    assert {(t, f) for t, f, _ in MATRIX} == every
    assert NAMESPACE == "ml"
