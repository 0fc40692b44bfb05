"""Observability: metrics that move, JSON log lines that name their object, Events on
state changes (once per change, not once per reconcile)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from kmock_harness import NAMESPACE, Api, eventually, model_deployment
from prometheus_client import REGISTRY, generate_latest
from rel_harness import (
    Fault,
    FaultyEmulator,
    condition,
    converged,
    md_object,
    operator,
    requests_by,
    resource_of,
)

from kubeserve import api
from kubeserve.config import OperatorConfig
from kubeserve.operator_main import JsonFormatter

pytestmark = [pytest.mark.kmock(cls=FaultyEmulator), pytest.mark.looptime]

CONFIG = OperatorConfig()
MD_PATH = f"/apis/{api.API_VERSION}/namespaces/{NAMESPACE}/{api.PLURAL}/mnist"
DEPLOYMENT_STATUS = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/mnist/status"


def sample(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


async def mark_ready(client: Api) -> None:
    await client.request(
        "PATCH",
        DEPLOYMENT_STATUS,
        {
            "status": {
                "observedGeneration": 1,
                "replicas": 1,
                "updatedReplicas": 1,
                "readyReplicas": 1,
                "availableReplicas": 1,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                ],
            }
        },
    )


def posted_events(kmock: Any) -> list[tuple[str, str]]:
    return [
        (r.data["type"], r.data["reason"])
        for r in requests_by(kmock)
        if r.method.value == "POST" and r.url.path.endswith("/events")
    ]


def ready_is(kmock: Any, status: str, reason: str | None = None) -> bool:
    ready = condition(md_object(kmock), "Ready")
    return bool(
        ready and ready["status"] == status and (reason is None or ready["reason"] == reason)
    )


async def test_events_on_state_changes_once_each(cluster: FaultyEmulator) -> None:
    client = Api(str(cluster.url))
    body = model_deployment(autoscaling={"minReplicas": 2, "maxReplicas": 4})
    async with operator(cluster, CONFIG):
        await client.create_md(body)
        await eventually(lambda: converged(cluster, body), timeout=30)
        await asyncio.sleep(5)
        await mark_ready(client)
        await eventually(lambda: ready_is(cluster, "True"), timeout=30)
        await asyncio.sleep(5)
        # A typo: InvalidSpec, Ready False.
        await client.request(
            "PATCH", MD_PATH, {"metadata": {"generation": 2}, "spec": {"replicas": -1}}
        )
        await eventually(lambda: ready_is(cluster, "False", "InvalidSpec"), timeout=30)
        await asyncio.sleep(5)
        # Fixed, and autoscaling dropped: the HPA and PDB are pruned, Ready is back.
        await client.request(
            "PATCH",
            MD_PATH,
            {"metadata": {"generation": 3}, "spec": {"replicas": 1, "autoscaling": None}},
        )
        await eventually(lambda: ready_is(cluster, "True"), timeout=30)
        # Several resyncs change nothing: no more events.
        before = len(posted_events(cluster))
        await asyncio.sleep(3 * CONFIG.resync_seconds)
        after = len(posted_events(cluster))

    events = posted_events(cluster)
    assert after == before, events[before:]
    assert events.count(("Normal", "ReadyTrue")) == 2, events
    assert events.count(("Warning", "ReadyFalse")) == 1, events
    assert events.count(("Warning", "InvalidSpec")) == 1, events
    assert events.count(("Normal", "Pruned")) == 2, events  # HPA and PDB
    involved = {
        json.dumps(r.data["involvedObject"], sort_keys=True)
        for r in requests_by(cluster)
        if r.url.path.endswith("/events")
    }
    assert len(involved) == 1
    assert json.loads(involved.pop())["uid"] == body["metadata"]["uid"]


async def test_conflict_event(cluster: FaultyEmulator) -> None:
    services = resource_of(cluster, "v1", "services")
    cluster.objects[services, NAMESPACE, "mnist"] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "mnist", "namespace": NAMESPACE, "uid": "theirs"},
        "spec": {"ports": [{"port": 80}]},
    }
    async with operator(cluster, CONFIG):
        await Api(str(cluster.url)).create_md(model_deployment())
        await eventually(lambda: ready_is(cluster, "False", "OwnershipConflict"), timeout=30)
        await asyncio.sleep(2 * CONFIG.resync_seconds)
    assert posted_events(cluster).count(("Warning", "OwnershipConflict")) == 1


async def test_metrics_move(cluster: FaultyEmulator) -> None:
    ok = sample("kubeserve_reconciles_total", outcome="ok")
    errors = sample("kubeserve_reconciles_total", outcome="error")
    http_503 = sample("kubeserve_reconcile_errors_total", reason="http_503")
    invalid = sample("kubeserve_reconcile_errors_total", reason="InvalidSpec")
    durations = sample("kubeserve_reconcile_duration_seconds_count")
    refused = sample("kubeserve_api_requests_total", verb="PATCH", code="503")
    cluster.inject(Fault("PATCH", r"/deployments/mnist$", 503, times=4))
    client = Api(str(cluster.url))
    body = model_deployment()
    async with operator(cluster, CONFIG):
        await client.create_md(body)
        await eventually(lambda: converged(cluster, body), timeout=60)
        await mark_ready(client)
        await eventually(lambda: ready_is(cluster, "True"), timeout=30)
        ready_gauge = sample("kubeserve_modeldeployments_ready", namespace=NAMESPACE, name="mnist")
        true_ready = sample(
            "kubeserve_modeldeployment_condition",
            namespace=NAMESPACE,
            name="mnist",
            type="Ready",
            status="True",
        )
        await client.request(
            "PATCH", MD_PATH, {"metadata": {"generation": 2}, "spec": {"replicas": -1}}
        )
        await eventually(lambda: ready_is(cluster, "False", "InvalidSpec"), timeout=30)
        false_ready = sample(
            "kubeserve_modeldeployment_condition",
            namespace=NAMESPACE,
            name="mnist",
            type="Ready",
            status="False",
        )
        invalid_cond = sample(
            "kubeserve_modeldeployment_condition",
            namespace=NAMESPACE,
            name="mnist",
            type="InvalidSpec",
            status="True",
        )
        await client.request("DELETE", MD_PATH)
        await asyncio.sleep(5)
        exposition = generate_latest(REGISTRY).decode()

    assert sample("kubeserve_reconciles_total", outcome="ok") > ok
    # Every request is counted, the refused ones by their status.
    assert sample("kubeserve_api_requests_total", verb="PATCH", code="503") == refused + 4
    assert sample("kubeserve_reconciles_total", outcome="error") >= errors + 1
    assert sample("kubeserve_reconcile_errors_total", reason="http_503") >= http_503 + 1
    assert sample("kubeserve_reconcile_errors_total", reason="InvalidSpec") == invalid + 1
    assert sample("kubeserve_reconcile_duration_seconds_count") >= durations + 2
    assert ready_gauge == 1.0
    assert (true_ready, false_ready, invalid_cond) == (1.0, 1.0, 1.0)
    # A deleted ModelDeployment leaves no series behind.
    assert 'name="mnist"' not in "\n".join(
        line
        for line in exposition.splitlines()
        if line.startswith(("kubeserve_modeldeployment_condition", "kubeserve_modeldeployments"))
    )
    for name in (
        "kubeserve_reconciles_total",
        "kubeserve_reconcile_errors_total",
        "kubeserve_reconcile_duration_seconds_bucket",
        "kubeserve_modeldeployment_condition",
    ):
        assert f"# TYPE {name.removesuffix('_bucket').removesuffix('_total')}" in exposition


async def test_every_per_object_log_line_names_its_object(
    cluster: FaultyEmulator, json_lines: io.StringIO
) -> None:
    # Faults make the client, the queue and the event poster log about the object.
    cluster.inject(
        Fault("PATCH", r"/deployments/mnist$", 503, times=6),
        Fault("POST", r"/events$", 500, times=8),
    )
    client = Api(str(cluster.url))
    body = model_deployment()
    async with operator(cluster, CONFIG):
        await client.create_md(body)
        await eventually(lambda: converged(cluster, body), timeout=120)
        await mark_ready(client)
        await eventually(lambda: ready_is(cluster, "True"), timeout=30)
        await asyncio.sleep(5)

    lines = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    assert lines, "logs were captured"
    for entry in lines:
        assert set(entry) >= {"time", "level", "logger", "message"}
    per_object = [
        e
        for e in lines
        if e["logger"] == "kopf.objects"
        or e["logger"].startswith(("kubeserve.kube", "kubeserve.reconcile", "kubeserve.workqueue"))
    ]
    ours = [e for e in per_object if e["logger"].startswith("kubeserve")]
    assert len(ours) >= 3, "the faults produced our own log lines"
    unnamed = [e for e in per_object if (e.get("namespace"), e.get("name")) != (NAMESPACE, "mnist")]
    assert unnamed == [], unnamed[:3]


def test_json_formatter_reads_kopfs_object_reference() -> None:
    """kopf's ObjectLogger puts the reference in ``extra={"k8s_ref": {...}}``."""
    import kopf._core.actions.loggers as kopf_loggers

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    kopf_logger = logging.getLogger("kopf.objects")
    kopf_logger.addHandler(handler)
    try:
        body: Any = {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": "m", "namespace": "ns", "uid": "u"},
        }
        adapter = kopf_loggers.ObjectLogger(body=body, settings=None)  # type: ignore[arg-type]
        adapter.warning("something about %s", "it")
    finally:
        kopf_logger.removeHandler(handler)
    entry = json.loads(out.getvalue())
    assert (entry["namespace"], entry["name"], entry["message"]) == (
        "ns",
        "m",
        "something about it",
    )
