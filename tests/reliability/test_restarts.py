"""The operator killed mid-reconcile at random points, then restarted: it converges.

Each case (20, seeded) walks a ModelDeployment through three specs. Before every step the
operator is started with a kill switch armed at a random request number N: on its N-th
request (before or after kmock handles it, also drawn at random) the operator is killed like
a process (every task it started is cancelled; nothing cleans up). The spec may change while
it is down. A fresh operator (empty memory, as a new pod) then runs to completion.

After the last step: exactly the desired children exist, each as rendered, with one
controller owner reference; nothing left over from earlier specs (orphans); every object was
created once per life (no duplicate creates, no delete-and-recreate churn of wanted
children); the status describes the current generation.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from kmock_harness import MD_RESOURCE, NAMESPACE, Api, eventually, model_deployment
from rel_harness import (
    CHILD_PLURALS,
    OPERATOR_UA,
    Fault,
    FaultyEmulator,
    converged,
    desired_children,
    live,
    operator,
    requests_by,
    start_operator,
    user_agent,
)
from rel_settings import count

from kubeserve import api
from kubeserve.config import OperatorConfig

pytestmark = [pytest.mark.kmock(cls=FaultyEmulator), pytest.mark.looptime]

SEED = 20260601
CASES = 20
CONFIG = OperatorConfig()
MD_PATH = f"/apis/{api.API_VERSION}/namespaces/{NAMESPACE}/{api.PLURAL}/mnist"

# Specs that add and remove children of every kind: HPA <-> KEDA <-> none, PDB, ConfigMap
# (torchserve), NetworkPolicy.
SPECS: list[dict[str, Any]] = [
    {"replicas": 2},
    {"replicas": 1, "networkPolicy": {"enabled": True}},
    {"autoscaling": {"minReplicas": 2, "maxReplicas": 5}},
    {
        "autoscaling": {
            "minReplicas": 1,
            "maxReplicas": 3,
            "engine": "keda",
            "metrics": [{"type": "requestsPerSecond", "target": 5}],
        }
    },
    {"runtime": "torchserve", "replicas": 3},
    {"replicas": 1},
]


def plan(case: int) -> list[tuple[dict[str, Any], int, bool]]:
    """(spec, kill at request N, kill before kmock handles it) for each of 3 steps."""
    rng = random.Random(SEED + case)
    return [(rng.choice(SPECS), rng.randint(1, 14), rng.random() < 0.5) for _ in range(3)]


def body_for(spec: dict[str, Any], generation: int, uid: str) -> dict[str, Any]:
    body = model_deployment(**spec)
    body["metadata"]["generation"] = generation
    body["metadata"]["uid"] = uid
    return body


async def declare_keda(kmock: Any) -> None:
    kmock.resources["keda.sh/v1alpha1/scaledobjects"] = kmock.ResourceInfo(
        kind="ScaledObject",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    )


@pytest.mark.parametrize("case", range(CASES))
async def test_killed_mid_reconcile_then_restarted_converges(
    cluster: FaultyEmulator, case: int
) -> None:
    await declare_keda(cluster)
    client = Api(str(cluster.url))
    uid = "0000-restart-" + str(case)
    body: dict[str, Any] = {}
    kills = 0

    for step, (spec, kill_at, before) in enumerate(plan(case), start=1):
        body = body_for(spec, step, uid)
        if step == 1:
            await client.create_md(body)
        else:
            # The spec changes while no operator runs (kubectl apply during the restart).
            # A merge patch merges nested maps: clear the old fields first, then set.
            await client.request("PATCH", MD_PATH, {"spec": _clearing()})
            patch = {"metadata": {"generation": step}, "spec": {"runtime": "onnxruntime", **spec}}
            await client.request("PATCH", MD_PATH, patch)

        killed = asyncio.Event()
        seen = 0

        async def switch(
            request: Any, _at: int = kill_at, _before: bool = before, _killed: Any = killed
        ) -> None:
            nonlocal seen
            if not user_agent(request).startswith(OPERATOR_UA) or _killed.is_set():
                return
            seen += 1
            if seen == _at:
                _killed.set()
                if _before:
                    # The request never reaches the server: the process died first.
                    await asyncio.sleep(3600)

        cluster.hooks.append(switch)
        run = await start_operator(cluster, CONFIG)
        try:
            await asyncio.wait_for(killed.wait(), timeout=120)
        except TimeoutError:
            pass  # converged in fewer requests than the kill point: nothing to kill
        else:
            kills += 1
        await run.kill()
        cluster.hooks.remove(switch)

    async with operator(cluster, CONFIG):
        await eventually(lambda: converged(cluster, body), timeout=600, step=0.5)
        await asyncio.sleep(5)  # let in-flight work finish, then look again

    assert converged(cluster, body)
    desired = {(c["kind"], c["metadata"]["name"]) for c in desired_children(body)}
    found = live(cluster)
    assert set(found) == desired, f"orphans: {set(found) - desired}"
    for obj in found.values():
        owners = [r for r in obj["metadata"].get("ownerReferences", []) if r.get("controller")]
        assert [o["uid"] for o in owners] == [uid]
    # No duplicate creates and no delete-and-recreate churn: an object is created at most
    # once each time the spec starts wanting it.
    allowed = creations_allowed([spec for spec, _, _ in plan(case)])
    for (plural, _ns, _name), created in cluster.created.items():
        if plural in CHILD_PLURALS:
            assert created <= allowed.get(plural, 0), (plural, created, allowed)
    count("operator kills survived", kills)
    count("restart cases converged")
    md = cluster.objects[(cluster.resource(MD_RESOURCE), NAMESPACE, "mnist")].raw
    assert md["status"]["observedGeneration"] == 3
    assert len(requests_by(cluster)) < 2000


def creations_allowed(specs: list[dict[str, Any]]) -> dict[str, int]:
    from kubeserve.resources.kinds import kind_of

    wanted = [
        {kind_of(c).plural for c in desired_children(body_for(spec, 1, "u"))} for spec in specs
    ]
    allowed: dict[str, int] = {}
    for index, plurals in enumerate(wanted):
        for plural in plurals:
            if index == 0 or plural not in wanted[index - 1]:
                allowed[plural] = allowed.get(plural, 0) + 1
    return allowed


def _clearing() -> dict[str, Any]:
    """A merge patch removing every field SPECS set (null deletes a key)."""
    return dict.fromkeys({key for spec in SPECS for key in spec} - {"runtime"})


def test_plan_is_seeded_and_varied() -> None:
    plans = [plan(case) for case in range(CASES)]
    assert plans == [plan(case) for case in range(CASES)], "reproducible"
    assert len({step[1] for p in plans for step in p}) >= 10, "kill points vary"
    assert {step[2] for p in plans for step in p} == {True, False}


@pytest.mark.parametrize("inventory", ["listed", "forbidden"])
async def test_killed_before_the_first_status_write_then_spec_shrinks(
    cluster: FaultyEmulator, inventory: str
) -> None:
    """The narrowest window: children applied, the process dies before it writes any status,
    and the spec stops wanting some of them before a new process starts. The new process has
    no status to tell it what the old one created: it must still look and prune, from its
    startup inventory or, when it may not list children, by looking up every kind."""
    if inventory == "forbidden":
        cluster.inject(Fault("GET", ".", 403, times=None, params={"limit": "500"}))
    client = Api(str(cluster.url))
    first = body_for({"autoscaling": {"minReplicas": 2, "maxReplicas": 5}}, 1, "uid-shrink")
    await client.create_md(first)

    killed = asyncio.Event()

    async def die_at_status(request: Any) -> None:
        if request.url.path.endswith("/status") and user_agent(request).startswith(OPERATOR_UA):
            killed.set()
            await asyncio.sleep(3600)  # the status write never lands

    cluster.hooks.append(die_at_status)
    run = await start_operator(cluster, CONFIG)
    await asyncio.wait_for(killed.wait(), timeout=60)
    await run.kill()
    cluster.hooks.remove(die_at_status)
    assert {kind for kind, _ in live(cluster)} >= {"HorizontalPodAutoscaler", "PodDisruptionBudget"}

    await client.request("PATCH", MD_PATH, {"spec": _clearing()})
    second = body_for({"replicas": 1}, 2, "uid-shrink")
    await client.request("PATCH", MD_PATH, {"metadata": {"generation": 2}, "spec": {"replicas": 1}})
    restarted = len(list(cluster))
    async with operator(cluster, CONFIG):
        await eventually(lambda: converged(cluster, second), timeout=120, step=0.5)
    assert set(live(cluster)) == {("Deployment", "mnist"), ("Service", "mnist")}
    lookups = {
        str(r.resource.plural)
        for r in requests_by(cluster)
        if r.id >= restarted and r.method.value == "GET" and r.name == "mnist"
    }
    if inventory == "listed":
        # Only what the inventory showed to be stale, fetched for its uid before the delete.
        assert lookups == {"horizontalpodautoscalers", "poddisruptionbudgets"}
    else:
        assert lookups == set(CHILD_PLURALS), "every kind looked up on first sight"
