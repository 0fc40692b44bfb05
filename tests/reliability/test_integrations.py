"""Missing optional integrations and restricted permissions: conditions, never crashes.

* KEDA absent: its API answers 404 (the ScaledObject apply and the discovery of
  keda.sh/v1alpha1). AutoscalerReady=False reason KEDANotInstalled; the rest is applied;
  over a long fake-time window the operator retries at the resync pace, not in a loop.
* Prometheus Operator absent: nothing we render needs monitoring.coreos.com; no request
  goes there.
* No GPU node: a GPU ModelDeployment gets its children and Schedulable=False (or Unknown
  while no Node is known), never a crash.
* Namespaced mode: kopf watching one namespace (scanning disabled), with every cluster-wide
  list of a namespaced resource forbidden, still works.
* Nodes forbidden (403 on list/watch): Schedulable Unknown reason NodesForbidden; the rest
  of the ModelDeployment is reconciled; one warning, and kopf's endless retries of the Node
  watch log no error each.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from kmock_harness import NAMESPACE, Api, eventually, model_deployment
from rel_harness import (
    Fault,
    FaultyEmulator,
    condition,
    converged,
    is_apply,
    live,
    md_object,
    operator,
    requests_by,
)
from rel_settings import bound

from kubeserve.config import OperatorConfig

pytestmark = [pytest.mark.kmock(cls=FaultyEmulator), pytest.mark.looptime]

CONFIG = OperatorConfig()
RESYNC = CONFIG.resync_seconds
KEDA = {
    "minReplicas": 1,
    "maxReplicas": 4,
    "engine": "keda",
    "metrics": [{"type": "concurrency", "target": 4}],
}


def keda_absent(kmock: FaultyEmulator) -> None:
    kmock.inject(Fault(None, r"^/apis/keda\.sh(/|$)", 404, times=None, client=None))


async def test_keda_not_installed_is_a_condition_and_no_hot_loop(
    cluster: FaultyEmulator,
) -> None:
    keda_absent(cluster)
    window = 1800.0
    body = model_deployment(autoscaling=KEDA)
    async with operator(cluster, CONFIG):
        await Api(str(cluster.url)).create_md(body)
        autoscaler = await eventually(
            lambda: (
                (c := condition(md_object(cluster), "AutoscalerReady"))
                and c["reason"] == "KEDANotInstalled"
                and c
            ),
            timeout=30,
        )
        await asyncio.sleep(window)

    assert autoscaler["status"] == "False"
    assert "install KEDA" in autoscaler["message"]
    ready = condition(md_object(cluster), "Ready")
    assert ready is not None and ready["status"] == "False"
    assert {kind for kind, _ in live(cluster)} == {"Deployment", "Service"}
    keda_requests = [r for r in requests_by(cluster) if "/keda.sh" in r.url.path]
    # Per reconcile: a GET of the ScaledObject (never applied, so never known to be ours),
    # the apply, the discovery of keda.sh/v1alpha1. Reconciles: one per resync period and a
    # few at the start. A loop would make thousands.
    reconciles = window / RESYNC + 5
    bound("keda.sh requests with KEDA absent, 1800 s", len(keda_requests), 3 * reconciles)
    assert len(keda_requests) <= 3 * reconciles, len(keda_requests)
    bound("requests with KEDA absent, 1800 s", len(requests_by(cluster)), 10 * reconciles)
    assert len(requests_by(cluster)) <= 10 * reconciles, len(requests_by(cluster))


async def test_prometheus_operator_absent_is_not_needed(cluster: FaultyEmulator) -> None:
    cluster.inject(Fault(None, r"^/apis/monitoring\.coreos\.com", 404, times=None, client=None))
    body = model_deployment(autoscaling={"minReplicas": 1, "maxReplicas": 3})
    async with operator(cluster, CONFIG):
        await Api(str(cluster.url)).create_md(body)
        await eventually(lambda: converged(cluster, body), timeout=30)
        await asyncio.sleep(RESYNC)
    assert not [r for r in cluster if "monitoring.coreos.com" in r.url.path]
    assert condition(md_object(cluster), "AutoscalerReady") is not None


async def test_no_gpu_node_gives_a_condition(cluster: FaultyEmulator) -> None:
    nodes = cluster.resource("v1/nodes")
    cluster.objects[nodes, None, "cpu-1"] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "cpu-1", "uid": "n1", "resourceVersion": "1", "labels": {}},
        "status": {"allocatable": {"cpu": "8", "memory": "32Gi"}},
    }
    body = model_deployment(gpu={"count": 1, "product": ["NVIDIA-A100-SXM4-80GB"]})
    async with operator(cluster, CONFIG):
        await Api(str(cluster.url)).create_md(body)
        placement = await eventually(
            lambda: (
                (c := condition(md_object(cluster), "Schedulable")) and c["status"] == "False" and c
            ),
            timeout=30,
        )
        await eventually(lambda: converged(cluster, body), timeout=30)
        await asyncio.sleep(2 * RESYNC)
    assert "NVIDIA-A100-SXM4-80GB" in placement["message"]
    # Ready=False for want of a node is a reconcile verdict, not the Deployment's: its
    # events must not re-queue the object for ever (they did: 391 reconciles in 5 s).
    bound("requests, no GPU node, 120 s", len(requests_by(cluster)), 4 * 20)
    assert len(requests_by(cluster)) <= 4 * 20, len(requests_by(cluster))
    ready = condition(md_object(cluster), "Ready")
    assert ready is not None and ready["status"] == "False"


async def test_namespaced_mode_with_only_namespace_permissions(cluster: FaultyEmulator) -> None:
    """A Role, not a ClusterRole: every cluster-wide list or watch of a namespaced
    resource is forbidden. Nodes stay readable (a ClusterRole for nodes only)."""
    cluster.inject(
        Fault(
            "GET",
            r"^/apis?/(v1|[^/]+/[^/]+)/(?!nodes)[a-z]+$",  # /api/v1/pods, /apis/g/v/plural
            403,
            times=None,
            client=None,
        )
    )
    other = model_deployment("elsewhere")
    other["metadata"]["namespace"] = "other"
    body = model_deployment(replicas=2)
    client = Api(str(cluster.url))
    async with operator(cluster, CONFIG, namespaces=[NAMESPACE]):
        await client.create_md(body)
        await client.create_md(other)
        await eventually(lambda: converged(cluster, body), timeout=30)
        await asyncio.sleep(RESYNC)
    assert not [r for r in requests_by(cluster) if "/namespaces/other/" in r.url.path]
    assert not [r for r in cluster if "/namespaces/other/" in r.url.path and is_apply(r)]
    # It never even tried a cluster-wide list or watch a Role would forbid.
    assert [r.url.path for r, _ in cluster.injected] == []
    cluster_wide = {
        r.url.path
        for r in cluster
        if r.method.value == "GET" and r.name is None and "/namespaces/" not in r.url.path
    }
    resources = {p for p in cluster_wide if p.count("/") >= (3 if p.startswith("/api/") else 4)}
    assert resources == {"/api/v1/nodes"}, cluster_wide  # beyond discovery, only Nodes


async def test_nodes_forbidden_degrades_to_schedulable_unknown(
    cluster: FaultyEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    cluster.inject(Fault("GET", r"^/api/v1/nodes$", 403, times=None, client=None))
    body = model_deployment(gpu={"count": 1})
    async with operator(cluster, CONFIG, namespaces=[NAMESPACE]) as run:
        await Api(str(cluster.url)).create_md(body)
        await eventually(lambda: converged(cluster, body), timeout=120, step=0.5)
        await asyncio.sleep(5 * RESYNC)
        alive = not run.task.done()
    placement = condition(md_object(cluster), "Schedulable")
    assert alive, "the operator keeps running without Nodes"
    assert placement is not None
    assert (placement["status"], placement["reason"]) == ("Unknown", "NodesForbidden")
    node_lists = [r for r, _ in cluster.injected if r.url.path == "/api/v1/nodes"]
    assert len(node_lists) <= 5 * RESYNC / 10 + 10, "retried with backoff, not in a loop"
    # One warning explains it; kopf's retries of the Node watch (every 30 s) log no error.
    about_nodes = [r for r in caplog.records if "nodes" in r.getMessage().lower()]
    errors = [r.getMessage() for r in about_nodes if r.levelno >= logging.ERROR]
    assert len(node_lists) > 20 and len(errors) <= 3, errors
    assert [r.levelname for r in about_nodes if "NodesForbidden" in r.getMessage()] == ["WARNING"]
