"""The operator's core lifecycle against kmock: create, update, invalid spec, drift, prune."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kmock_harness import (
    MD_RESOURCE,
    NAMESPACE,
    Api,
    children,
    eventually,
    model_deployment,
    running_operator,
)

from kubeserve import api, rbac
from kubeserve.config import OperatorConfig
from kubeserve.drift import drifted
from kubeserve.kube import resource_path
from kubeserve.render import render
from kubeserve.resources.kinds import CHILD_KINDS

MD_PATH = f"/apis/{api.API_VERSION}/namespaces/{NAMESPACE}/{api.PLURAL}"


def md_status(kmock: Any, name: str = "mnist") -> dict[str, Any]:
    key = (kmock.resource(f"{api.GROUP}/{api.VERSION}/{api.PLURAL}"), NAMESPACE, name)
    return dict(kmock.objects[key].raw.get("status") or {})


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), None)


async def test_create_applies_children_with_owner_and_field_manager(
    kmock: Any, kube_api: Api
) -> None:
    body = model_deployment(replicas=2)
    async with running_operator(kmock):
        await kube_api.create_md(body)
        found = await eventually(lambda: len(children(kmock)) >= 3 and children(kmock))

    assert set(found) == {"Deployment", "Service", "PodDisruptionBudget"}
    md_meta = kmock.objects[(kmock.resource(MD_RESOURCE), NAMESPACE, "mnist")].raw["metadata"]
    # No finalizer: deleting a ModelDeployment never waits for the operator.
    assert not md_meta.get("finalizers")
    assert not any(k.startswith("kubeserve.io/") for k in md_meta.get("annotations", {}))
    # The operator's RBAC grants no patch on ModelDeployments: only the status is written.
    md_writes = {
        (r.method.value, r.url.path.rsplit("/", 1)[-1])
        for r in kmock
        if "modeldeployments/" in r.url.path and r.method.value in ("PATCH", "PUT", "DELETE")
    }
    assert md_writes <= {("PATCH", "status")}
    for obj in found.values():
        refs = obj["metadata"]["ownerReferences"]
        assert refs == [
            {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "name": "mnist",
                "uid": body["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubeserve"
    assert found["Deployment"]["spec"]["replicas"] == 2
    server = found["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in server, "the image's entrypoint (tini + server) must stay in charge"
    assert "--model-dir=/mnt/models" in server["args"]

    applies = [
        r
        for r in kmock
        if r.method == "PATCH" and "apply-patch" in r.headers.get("Content-Type", "")
    ]
    assert applies, "children must be written with server-side apply"
    assert {r.params.get("fieldManager") for r in applies} == {"kubeserve"}
    assert {r.params.get("force") for r in applies} == {"true"}


async def test_one_list_per_child_kind_at_startup_then_only_the_wanted_children_are_looked_up(
    kmock: Any, kube_api: Api
) -> None:
    """The startup inventory replaces a lookup of every child kind for every object."""
    body = model_deployment(replicas=2)  # a Deployment, a Service and a PDB
    async with running_operator(kmock):
        await kube_api.create_md(body)
        await eventually(lambda: md_status(kmock).get("observedGeneration"))

    ours = [r for r in kmock if r.headers.get("User-Agent", "").startswith("kubeserve")]
    collections = [r for r in ours if r.method == "GET" and r.name is None]
    lists = [r for r in collections if r.url.path != "/api/v1/nodes"]  # not the Node check
    assert sorted(r.url.path for r in lists) == sorted(
        resource_path(kind.api_version, kind.plural) for kind in CHILD_KINDS
    )
    assert {r.params.get("labelSelector") for r in lists} == {
        "app.kubernetes.io/managed-by=kubeserve"
    }
    # Only a child we are about to apply needs a look (it may belong to someone else).
    lookups = [r.resource.plural for r in ours if r.method == "GET" and r.name is not None]
    assert sorted(lookups) == ["deployments", "poddisruptionbudgets", "services"]


async def test_status_reports_url_and_readiness_from_the_deployment(
    kmock: Any, kube_api: Api
) -> None:
    async with running_operator(kmock):
        await kube_api.create_md(model_deployment())
        await eventually(lambda: condition(md_status(kmock), "Ready"))
        status = md_status(kmock)
        assert status["url"] == "http://mnist.ml.svc.cluster.local:8080"
        assert status["observedGeneration"] == 1
        assert condition(status, "Ready")["status"] == "False"

        # The Deployment controller reports one ready replica.
        await kube_api.request(
            "PATCH",
            f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/mnist/status",
            {
                "status": {
                    "observedGeneration": 1,
                    "replicas": 1,
                    "updatedReplicas": 1,
                    "readyReplicas": 1,
                    "availableReplicas": 1,
                    "conditions": [
                        {
                            "type": "Available",
                            "status": "True",
                            "reason": "MinimumReplicasAvailable",
                        },
                        {
                            "type": "Progressing",
                            "status": "True",
                            "reason": "NewReplicaSetAvailable",
                        },
                    ],
                }
            },
        )
        ready = await eventually(
            lambda: (c := condition(md_status(kmock), "Ready")) and c["status"] == "True" and c
        )
    assert ready["reason"] == "ReplicasReady"
    status = md_status(kmock)
    assert status["readyReplicas"] == 1
    assert condition(status, "Available")["status"] == "True"
    assert condition(status, "Progressing")["reason"] == "NewReplicaSetAvailable"


async def test_update_reaches_the_children(kmock: Any, kube_api: Api) -> None:
    async with running_operator(kmock):
        await kube_api.create_md(model_deployment())
        await eventually(lambda: "Deployment" in children(kmock))
        await kube_api.request(
            "PATCH",
            f"{MD_PATH}/mnist",
            {
                "metadata": {"generation": 2},
                "spec": {"replicas": 3, "env": [{"name": "LOG", "value": "debug"}]},
            },
        )
        deployment = await eventually(
            lambda: (
                (d := children(kmock).get("Deployment")) and d["spec"].get("replicas") == 3 and d
            )
        )
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "LOG", "value": "debug"} in env


async def test_invalid_spec_gets_a_condition_and_leaves_children_alone(
    kmock: Any, kube_api: Api
) -> None:
    async with running_operator(kmock):
        await kube_api.create_md(model_deployment())
        before = await eventually(lambda: "Deployment" in children(kmock) and children(kmock))
        requests_before = len(list(kmock))
        await kube_api.request(
            "PATCH",
            f"{MD_PATH}/mnist",
            {
                "metadata": {"generation": 2},
                "spec": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
            },
        )
        ready = await eventually(
            lambda: (
                (c := condition(md_status(kmock), "Ready")) and c["reason"] == "InvalidSpec" and c
            )
        )
        after = children(kmock)
    assert "minReplicas must be <= maxReplicas" in ready["message"]
    assert ready["status"] == "False"
    assert condition(md_status(kmock), "InvalidSpec")["status"] == "True"
    assert after["Deployment"]["spec"] == before["Deployment"]["spec"]
    applies_after = [
        r
        for r in list(kmock)[requests_before:]
        if "apply-patch" in r.headers.get("Content-Type", "")
    ]
    assert applies_after == [], "an invalid spec must not touch any child"


async def test_deleted_child_is_restored(kmock: Any, kube_api: Api) -> None:
    async with running_operator(kmock):
        await kube_api.create_md(model_deployment())
        first = await eventually(lambda: children(kmock).get("Deployment"))
        await kube_api.request("DELETE", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/mnist")
        assert "Deployment" not in children(kmock)
        restored = await eventually(lambda: children(kmock).get("Deployment"), timeout=180)
    assert restored["spec"]["template"] == first["spec"]["template"]


# No resync during these tests: only the watches on the children can repair them.
NO_RESYNC = OperatorConfig(resync_seconds=3600)
CHILD_PATHS = {
    kind.kind: resource_path(kind.api_version, kind.plural, NAMESPACE) for kind in CHILD_KINDS
}


def everything() -> dict[str, Any]:
    """A ModelDeployment with every always-served child kind: all of them are watched."""
    return model_deployment(
        runtime="torchserve",
        model={"uri": "s3://models/mnist/", "name": "mnist"},
        autoscaling={"minReplicas": 2, "maxReplicas": 4},
        networkPolicy={"enabled": True},
    )


@pytest.mark.parametrize(
    ("kind", "edit"),
    [
        ("ConfigMap", None),
        ("ConfigMap", {"data": {"config.properties": "enable_envvars_config=true"}}),
        ("Deployment", {"spec": {"template": {"spec": {"containers": [{"name": "server"}]}}}}),
        ("Service", None),
        ("Service", {"spec": {"ports": [{"name": "http", "port": 80}]}}),
        ("HorizontalPodAutoscaler", {"spec": {"maxReplicas": 40}}),
        ("PodDisruptionBudget", None),
        (
            "NetworkPolicy",
            {
                "metadata": {
                    "labels": {
                        "app.kubernetes.io/managed-by": "kubeserve",
                        "app.kubernetes.io/instance": "x",
                    }
                }
            },
        ),
    ],
)
async def test_a_deleted_or_edited_child_is_restored_at_once_not_at_the_next_resync(
    kmock: Any, kube_api: Api, kind: str, edit: dict[str, Any] | None
) -> None:
    body = everything()
    wanted = next(
        c for c in render(api.ModelDeployment.parse(body), NO_RESYNC) if c["kind"] == kind
    )
    loop = asyncio.get_running_loop()
    async with running_operator(kmock, NO_RESYNC):
        await kube_api.create_md(body)
        await eventually(lambda: md_status(kmock).get("observedGeneration"))
        assert not drifted(children(kmock)[kind], wanted)
        path = f"{CHILD_PATHS[kind]}/mnist"
        if edit is None:
            await kube_api.request("DELETE", path)
            assert kind not in children(kmock)
        else:
            await kube_api.request("PATCH", path, edit)
            assert drifted(children(kmock)[kind], wanted), "the edit took"
        changed_at = loop.time()
        await eventually(lambda: (c := children(kmock).get(kind)) and not drifted(c, wanted))
        restored_after = loop.time() - changed_at
    assert restored_after < 10 < NO_RESYNC.resync_seconds


async def test_changes_to_fields_we_do_not_set_cost_no_applies(kmock: Any, kube_api: Api) -> None:
    """Only a change to a field we set is drift: controllers and other tools are not."""
    deployment = f"{CHILD_PATHS['Deployment']}/mnist"
    async with running_operator(kmock, NO_RESYNC):
        await kube_api.create_md(everything())
        await eventually(lambda: md_status(kmock).get("observedGeneration"))
        await asyncio.sleep(5)
        before = len(list(kmock))
        for scaled in range(3, 6):
            # The HPA scales (spec.replicas is the autoscaler's), the Deployment controller
            # reports progress that does not change readiness, another tool annotates.
            await kube_api.request("PATCH", deployment, {"spec": {"replicas": scaled}})
            await kube_api.request(
                "PATCH", f"{deployment}/status", {"status": {"updatedReplicas": scaled}}
            )
            await kube_api.request(
                "PATCH",
                f"{CHILD_PATHS['Service']}/mnist",
                {"metadata": {"annotations": {"example.com/scraped": str(scaled)}}},
            )
        await asyncio.sleep(5)
        after = list(kmock)[before:]

    assert children(kmock)["Deployment"]["spec"]["replicas"] == 5
    assert [r.url.path for r in after if "apply-patch" in r.headers.get("Content-Type", "")] == []
    # The API server filters the watches: other objects of these kinds never reach us.
    ours = [r for r in kmock if r.headers.get("User-Agent", "").startswith(OURS)]
    watched = {
        r.url.path
        for r in ours
        if r.params.get("watch")
        and r.params.get("labelSelector") == "app.kubernetes.io/managed-by=kubeserve"
    }
    # Pods too (cold starts), by the same label: only our model servers.
    assert watched == {
        resource_path(k.api_version, k.plural) for k in CHILD_KINDS if not k.optional
    } | {"/api/v1/pods"}


async def test_deployment_progress_refreshes_the_status_in_one_write_without_applies(
    kmock: Any, kube_api: Api
) -> None:
    """A rollout's status updates need no apply; a burst of them that leaves Ready as it is
    costs one status write, and new condition messages alone cost none."""
    deployment = f"{CHILD_PATHS['Deployment']}/mnist"

    async def deployment_status(replicas: int, message: str) -> None:
        progressing = {
            "type": "Progressing",
            "status": "True",
            "reason": "ReplicaSetUpdated",
            "message": message,
        }
        await kube_api.request(
            "PATCH",
            f"{deployment}/status",
            {"status": {"replicas": replicas, "conditions": [progressing]}},
        )

    async with running_operator(kmock, NO_RESYNC):
        await kube_api.create_md(model_deployment(replicas=3))
        await eventually(lambda: md_status(kmock).get("observedGeneration"))
        await asyncio.sleep(3)
        start = len(list(kmock))
        for replicas in (1, 2, 3):
            await deployment_status(replicas, f"{replicas} of 3 pods created")
        await eventually(lambda: md_status(kmock).get("replicas") == 3)
        await asyncio.sleep(3)
        middle = len(list(kmock))
        await deployment_status(3, "a new message")
        await asyncio.sleep(5)
        requests = list(kmock)

    def ours(since: int, until: int) -> list[Any]:
        return [
            r
            for r in requests[since:until]
            if r.headers.get("User-Agent", "").startswith("kubeserve")
        ]

    burst = ours(start, middle)
    assert [r.url.path for r in burst if "apply-patch" in r.headers.get("Content-Type", "")] == []
    assert [r.url.path for r in burst if r.method == "PATCH"] == [f"{MD_PATH}/mnist/status"]
    assert ours(middle, len(requests)) == []
    assert condition(md_status(kmock), "Ready")["status"] == "False"


async def test_pruning_removes_only_children_no_longer_wanted(kmock: Any, kube_api: Api) -> None:
    async with running_operator(kmock):
        await kube_api.create_md(model_deployment(autoscaling={"minReplicas": 2, "maxReplicas": 4}))
        await eventually(
            lambda: {"HorizontalPodAutoscaler", "PodDisruptionBudget"} <= set(children(kmock))
        )
        await kube_api.request(
            "PATCH",
            f"{MD_PATH}/mnist",
            {"metadata": {"generation": 2}, "spec": {"autoscaling": None}},
        )
        remaining = await eventually(
            lambda: "HorizontalPodAutoscaler" not in children(kmock) and children(kmock)
        )
    assert set(remaining) == {"Deployment", "Service"}
    assert remaining["Deployment"]["spec"]["replicas"] == 1
    # Create, apply, prune, status and Events: every request the operator (kopf included)
    # made is one its RBAC allows.
    granted = rbac.permissions(rbac.rules(namespaced=False) + rbac.cluster_rules())
    used = {permission_of(r) for r in kmock if r.headers.get("User-Agent", "").startswith(OURS)}
    used.discard(None)  # API discovery, open to every authenticated user
    assert used <= granted, used - granted
    assert ("", "events", "create") in used and ("apps", "deployments", "delete") not in used


OURS = ("kubeserve", "kopf")
VERBS = {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


def permission_of(request: Any) -> tuple[str, str, str] | None:
    """(API group, resource[/subresource], verb) that RBAC checks for a request."""
    parts = request.url.path.strip("/").split("/")
    core = parts[0] == "api"
    if len(parts) < (3 if core else 4):
        return None
    group, rest = ("", parts[2:]) if core else (parts[1], parts[3:])
    if rest[0] == "namespaces" and len(rest) > 2:
        rest = rest[2:]
    resource = "/".join(rest[:1] + rest[2:3])
    if request.method.value == "GET":
        verb = "get" if len(rest) > 1 else ("watch" if request.params.get("watch") else "list")
    else:
        verb = VERBS[request.method.value]
    return group, resource, verb
