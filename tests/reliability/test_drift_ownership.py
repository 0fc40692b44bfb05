"""Drift and ownership against kmock.

Drift: a hand edit of a field we own is undone at once, from the child's watch event (the
resync is only the safety net for missed events); fields we do not
own (another tool's annotation, the replica count an autoscaler sets) are never in our apply
bodies, so server-side apply leaves them alone. kmock merges patches and has no field
ownership, so the proof here is the content of every apply body; the kind e2e suite checks
the same on a real API server (SSA keeps a field another manager set when our apply omits
it).

Ownership: an object with a child's name that we did not create is never written or deleted
(no PATCH, no DELETE for it), and Ready=False reason OwnershipConflict says so. Deleting the
ModelDeployment: the operator deletes nothing itself; every child carries a controller owner
reference with blockOwnerDeletion, so the API server's garbage collector does it (kmock has
no GC).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from kmock_harness import MD_RESOURCE, NAMESPACE, Api, eventually, model_deployment
from rel_harness import (
    FaultyEmulator,
    condition,
    converged,
    desired_children,
    is_apply,
    live,
    md_object,
    operator,
    requests_by,
    resource_of,
)

from kubeserve import api
from kubeserve.config import OperatorConfig

pytestmark = [pytest.mark.kmock(cls=FaultyEmulator), pytest.mark.looptime]

CONFIG = OperatorConfig()
RESYNC = CONFIG.resync_seconds
DEPLOYMENT = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/mnist"
MD_PATH = f"/apis/{api.API_VERSION}/namespaces/{NAMESPACE}/{api.PLURAL}/mnist"
FOREIGN = "example.com/owned-by-someone-else"


def applies_to(kmock: Any, path_end: str) -> list[Any]:
    return [r for r in requests_by(kmock) if is_apply(r) and r.url.path.endswith(path_end)]


def server(deployment: dict[str, Any]) -> dict[str, Any]:
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


@pytest.mark.parametrize(
    ("field", "patch"),
    [
        ("image", {"spec": {"template": {"spec": {"containers": [{"name": "server"}]}}}}),
        ("replicas", {"spec": {"replicas": 7}}),
        ("labels", {"metadata": {"labels": {"app.kubernetes.io/instance": "hijacked"}}}),
    ],
)
async def test_hand_edit_of_an_owned_field_is_restored_at_once(
    cluster: FaultyEmulator, field: str, patch: dict[str, Any]
) -> None:
    loop = asyncio.get_running_loop()
    client = Api(str(cluster.url))
    body = model_deployment(replicas=2)
    async with operator(cluster, CONFIG):
        await client.create_md(body)
        await eventually(lambda: converged(cluster, body), timeout=30)
        await asyncio.sleep(5)
        await client.request("PATCH", DEPLOYMENT, patch)  # kubectl edit
        edited_at = loop.time()
        assert not converged(cluster, body), "the edit took"
        await eventually(lambda: converged(cluster, body), timeout=RESYNC + 5, step=0.5)
        restored_after = loop.time() - edited_at
    assert restored_after <= 5 < RESYNC, restored_after


async def test_foreign_annotation_and_autoscaler_replicas_are_never_in_our_applies(
    cluster: FaultyEmulator,
) -> None:
    client = Api(str(cluster.url))
    body = model_deployment(autoscaling={"minReplicas": 2, "maxReplicas": 6})
    async with operator(cluster, CONFIG):
        await client.create_md(body)
        await eventually(lambda: converged(cluster, body), timeout=30)
        # Another tool annotates; the HPA controller scales to 5.
        await client.request("PATCH", DEPLOYMENT, {"metadata": {"annotations": {FOREIGN: "x"}}})
        await client.request("PATCH", DEPLOYMENT, {"spec": {"replicas": 5}})
        await asyncio.sleep(3 * RESYNC + 1)  # three resyncs re-apply everything
        live_deployment = live(cluster)[("Deployment", "mnist")]

    bodies = [r.data for r in applies_to(cluster, "/deployments/mnist")]
    assert len(bodies) >= 4, "the resyncs re-applied the Deployment"
    for sent in bodies:
        assert "replicas" not in sent["spec"], "the autoscaler owns spec.replicas"
        assert "annotations" not in sent["metadata"], "we own no annotation, so clear none"
    # Our applies are the rendered object, always the same bytes: a field manager that
    # sends the same intent owns the same fields.
    assert all(sent == bodies[0] for sent in bodies)
    assert bodies[0] == desired_children(body)[0 if bodies[0]["kind"] == "Deployment" else 1]
    assert live_deployment["metadata"]["annotations"][FOREIGN] == "x"
    assert live_deployment["spec"]["replicas"] == 5


def foreign(kind_path: str, kind: str, api_version: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": "mnist",
            "namespace": NAMESPACE,
            "uid": str(uuid.uuid4()),
            "resourceVersion": "1",
            "labels": {"team": "payments"},
            **extra,
        },
        "spec": {"selector": {"app": "payments"}, "ports": [{"port": 80}]},
    }


async def test_colliding_object_we_did_not_create_is_never_touched(
    cluster: FaultyEmulator,
) -> None:
    services = resource_of(cluster, "v1", "services")
    someone_elses = foreign("services", "Service", "v1")
    cluster.objects[services, NAMESPACE, "mnist"] = someone_elses
    # Owned by a different (older) ModelDeployment of the same name: not ours either.
    hpas = resource_of(cluster, "autoscaling/v2", "horizontalpodautoscalers")
    old_owner = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": "mnist",
        "uid": "an-older-modeldeployment",
        "controller": True,
    }
    cluster.objects[hpas, NAMESPACE, "mnist"] = {
        **foreign("hpa", "HorizontalPodAutoscaler", "autoscaling/v2", ownerReferences=[old_owner]),
        "spec": {"maxReplicas": 3, "scaleTargetRef": {"kind": "Deployment", "name": "x"}},
    }
    client = Api(str(cluster.url))
    body = model_deployment(replicas=1)  # wants a Service, does not want an HPA
    async with operator(cluster, CONFIG):
        await client.create_md(body)
        ready = await eventually(
            lambda: (
                (c := condition(md_object(cluster), "Ready"))
                and c["reason"] == "OwnershipConflict"
                and c
            ),
            timeout=30,
        )
        await asyncio.sleep(2 * RESYNC)
        still = condition(md_object(cluster), "Ready")

    assert ready["status"] == "False"
    assert "Service mnist exists and is not owned by this ModelDeployment" in ready["message"]
    assert still is not None and still["reason"] == "OwnershipConflict"
    touched = [
        r
        for r in requests_by(cluster)
        if r.method.value in ("PATCH", "PUT", "DELETE", "POST")
        and (r.url.path.endswith("/services/mnist") or "horizontalpodautoscalers" in r.url.path)
    ]
    assert touched == [], [(r.method.value, r.url.path) for r in touched]
    assert cluster.objects[services, NAMESPACE, "mnist"].raw["spec"] == someone_elses["spec"]
    assert ("Deployment", "mnist") in live(cluster), "the children that do not collide are made"
    events = [r.data for r in requests_by(cluster) if r.url.path.endswith("/events")]
    assert any(e["reason"] == "OwnershipConflict" for e in events)


async def test_deleting_the_modeldeployment_leaves_deletion_to_the_garbage_collector(
    cluster: FaultyEmulator,
) -> None:
    services = resource_of(cluster, "v1", "services")
    cluster.objects[services, NAMESPACE, "unrelated"] = {
        **foreign("services", "Service", "v1"),
        "metadata": {"name": "unrelated", "namespace": NAMESPACE, "uid": "u-unrelated"},
    }
    client = Api(str(cluster.url))
    body = model_deployment(replicas=2, networkPolicy={"enabled": True})
    async with operator(cluster, CONFIG):
        await client.create_md(body)
        await eventually(lambda: converged(cluster, body), timeout=30)
        children = {k: v for k, v in live(cluster).items() if k[1] == "mnist"}
        # No finalizer: deletion never waits for the operator (or for an uninstalled one).
        assert not md_object(cluster)["metadata"].get("finalizers")
        await client.request("DELETE", MD_PATH)
        await eventually(
            lambda: cluster.objects[cluster.resource(MD_RESOURCE), NAMESPACE, "mnist"].deleted,
            timeout=10,
        )
        await asyncio.sleep(2 * RESYNC)

    deletes = [r for r in requests_by(cluster) if r.method.value == "DELETE"]
    assert deletes == [], "the API server's garbage collector deletes the children"
    md_meta = body["metadata"]
    for obj in children.values():
        assert obj["metadata"]["ownerReferences"] == [
            {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "name": md_meta["name"],
                "uid": md_meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    assert ("Service", "unrelated") in live(cluster)


async def test_pruning_deletes_only_our_object_by_uid(cluster: FaultyEmulator) -> None:
    """Pruning sends a UID precondition: a same-named replacement would survive."""
    client = Api(str(cluster.url))
    body = model_deployment(autoscaling={"minReplicas": 2, "maxReplicas": 4})
    async with operator(cluster, CONFIG):
        await client.create_md(body)
        await eventually(lambda: converged(cluster, body), timeout=30)
        hpa = live(cluster)[("HorizontalPodAutoscaler", "mnist")]
        await client.request(
            "PATCH", MD_PATH, {"metadata": {"generation": 2}, "spec": {"autoscaling": None}}
        )
        body["spec"].pop("autoscaling")
        body["metadata"]["generation"] = 2
        await eventually(lambda: converged(cluster, body), timeout=30)
    deletes = [r for r in requests_by(cluster) if r.method.value == "DELETE"]
    assert [r.url.path.rsplit("/", 2)[-2] for r in deletes] == [
        "horizontalpodautoscalers",
        "poddisruptionbudgets",
    ] or sorted(r.url.path.rsplit("/", 2)[-2] for r in deletes) == [
        "horizontalpodautoscalers",
        "poddisruptionbudgets",
    ]
    by_kind = {r.url.path.rsplit("/", 2)[-2]: r.data for r in deletes}
    assert by_kind["horizontalpodautoscalers"]["preconditions"] == {"uid": hpa["metadata"]["uid"]}
    events = [r.data for r in requests_by(cluster) if r.url.path.endswith("/events")]
    assert any(e["reason"] == "Pruned" for e in events)
