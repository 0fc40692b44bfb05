"""Cold-start timings, read by the operator from pod status alone.

The node simulator writes each Ready pod's timestamps as a kubelet would, with the timeline
of nodesim.COLD_START: the storage initializer's termination message reports 3.25 s of
download, the server starts 6 s after the pod's creation and is Ready 4 s later.
"""

from __future__ import annotations

import contextlib
import re
import urllib.request

import pytest
from cluster_env import Operator, md, model_deployment, ready_at_generation
from e2elib import Kube as Tools
from kubeapi import Kube, eventually
from nodesim import COLD_START
from prometheus_client.parser import text_string_to_metric_families
from test_model_lifecycle import provide_claim

pytestmark = pytest.mark.usefixtures("operator", "scheduler")

STARTUP = COLD_START.ready - COLD_START.server_started
TOTAL = COLD_START.ready


def _last_cold_start(kube: Kube, namespace: str, name: str) -> dict[str, object]:
    return eventually(
        lambda: ((md(kube, namespace, name) or {}).get("status") or {}).get("lastColdStart"),
        timeout=30,
        what=f"md/{name} status.lastColdStart",
    )


def _pods(kube: Kube, namespace: str) -> set[str]:
    return {p["metadata"]["name"] for p in kube.list("v1", "pods", namespace)}


def _metric(operator: Operator, series: str, /, **labels: str) -> float | None:
    """A sample of the operator's /metrics, whatever order its labels are written in."""
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        families = text_string_to_metric_families(response.read().decode())
        samples = [s for f in families for s in f.samples]
    return next((s.value for s in samples if s.name == series and s.labels == labels), None)


def test_the_status_and_the_histograms_give_each_stage(
    kube: Kube, tools: Tools, operator: Operator, namespace: str
) -> None:
    tools.apply(model_deployment("coldstart", namespace, replicas=2))
    ready_at_generation(kube, namespace, "coldstart")
    last = _last_cold_start(kube, namespace, "coldstart")
    assert last["pod"] in _pods(kube, namespace)
    assert {k: v for k, v in last.items() if k not in ("pod", "readyAt")} == {
        "downloadSeconds": 3.25,  # the initializer's own report, not its container's lifetime
        "cache": "miss",
        "startupSeconds": STARTUP,
        "totalSeconds": TOTAL,
    }
    described = tools.kubectl("describe", "md", "coldstart", "-n", namespace).stdout
    assert re.search(r"Last Cold Start:\s*\n(\s+.*\n)*?\s+Total Seconds:\s+10\b", described)
    wide = tools.kubectl("get", "md", "coldstart", "-n", namespace, "-o", "wide").stdout
    assert re.search(r"\bCOLD-START\b", wide) and re.search(r"\b10\b", wide.splitlines()[1])

    labels = {"namespace": namespace, "name": "coldstart"}
    stages = ("download", "startup", "total")

    def counts() -> dict[str, float | None]:
        return {
            stage: _metric(operator, "kubeserve_cold_start_seconds_count", **labels, stage=stage)
            for stage in stages
        }

    seen: list[dict[str, float | None]] = []
    with contextlib.suppress(AssertionError):
        eventually(lambda: seen.append(counts()) or seen[-1] == dict.fromkeys(stages, 2.0),
                   timeout=30, what="two pod starts in each stage's histogram")  # fmt: skip
    assert seen[-1] == dict.fromkeys(stages, 2.0)
    total = _metric(operator, "kubeserve_cold_start_seconds_sum", **labels, stage="total")
    assert total == 2 * TOTAL


def test_a_pvc_model_has_no_download_stage(kube: Kube, tools: Tools, namespace: str) -> None:
    provide_claim(kube, namespace, "models")
    tools.apply(model_deployment("from-pvc", namespace, model={"uri": "pvc://models/mnist"}))
    ready_at_generation(kube, namespace, "from-pvc")
    last = _last_cold_start(kube, namespace, "from-pvc")
    assert "downloadSeconds" not in last and "cache" not in last
    assert (last["startupSeconds"], last["totalSeconds"]) == (STARTUP, TOTAL)
