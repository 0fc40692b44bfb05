"""Canary analysis on a real Prometheus (issue 14): a failing canary breaches, a clean one not.

Debian's Prometheus scrapes, every second, from 127.0.0.1:
- two real ONNX Runtime servers (`kubeserve serve`), labelled as the stable pod and the canary
  pod of ModelDeployment ``shop``. The canary gets some requests with a wrong input name: the
  server answers 400 and counts them under ``code="400"``, its real failure path;
- the stable server a second time, labelled as the canary pod of ``clean``: a canary that
  serves cleanly (and proves the query reads the pod label, not the server);
- a recorded TF Serving scrape (promlib) labelled as the canary pod of ``shop-tfs``: 20 of
  1520 requests not OK, a known latency histogram.

``analysis.evaluate`` runs against it over a 15 s window (intervalSeconds, the API's minimum),
so about 25 s of load is enough. Not part of the control-plane fixtures: no operator needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cluster_env import REQUIRED_ENV
from promlib import PROMETHEUS, JsonPost, Load, Measured, Prometheus, RecordedScrape, Target
from promlib import prometheus as run_prometheus

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtimes"))
from fixtures_local import TINY_MODEL, serving, write_md

from kubeserve.analysis import AnalysisVerdict, Result, evaluate, next_failures, rolls_back
from kubeserve.api import ModelDeployment
from kubeserve.cli import main as kubeserve_main

NAMESPACE = "shop"
FIXTURES = Path(__file__).parent / "fixtures"
INTERVAL_S = 15  # the analysis window; the API's minimum
LOAD_SECONDS = 25.0
ROW = [0.5, -1.0, 2.0, 0.25]
STABLE_POD = "shop-7c9d5b8f6-x2k4q"
CANARY_POD = "shop-canary-6b7c8d9f5-m8n3p"
CLEAN_CANARY_POD = "clean-canary-5d6f7b8c9-q1w2e"  # the stable server, scraped a second time
TFS_CANARY_POD = "shop-tfs-canary-6b7c8d9f5-a1s2d"
TOLERANCE = 0.2


@dataclass
class Run:
    prom: Prometheus
    canary: Measured  # what the canary's clients saw: good and bad requests together


def _md(name: str, runtime: str = "onnxruntime", **analysis: Any) -> ModelDeployment:
    return ModelDeployment.parse(
        {
            "apiVersion": "kubeserve.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "runtime": runtime,
                "model": {"uri": "s3://models/shop/v1/model.onnx"},
                "canary": {
                    "model": {"uri": "s3://models/shop/v2/model.onnx"},
                    "trafficPercent": 10,
                    "analysis": {"intervalSeconds": INTERVAL_S, **analysis},
                },
            },
        }
    )


def _evaluate(prom: Prometheus, md: ModelDeployment) -> AnalysisVerdict:
    async def check() -> AnalysisVerdict:
        async with aiohttp.ClientSession() as session:
            return await evaluate(md, prom.url, session)

    return asyncio.run(check())


def _v2(name: str) -> dict[str, Any]:
    return {"inputs": [{"name": name, "shape": [1, 4], "datatype": "FP32", "data": ROW}]}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    if PROMETHEUS is None:
        message = "Prometheus is not installed (apt-get install prometheus)"
        if os.environ.get(REQUIRED_ENV) == "1":
            pytest.fail(f"{message} ({REQUIRED_ENV}=1)")
        pytest.skip(message)
    tmp = tmp_path_factory.mktemp("canary-analysis")
    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        status = kubeserve_main(["package", TINY_MODEL, "--input-shape", "1,4",
                                 "--format", "onnx", "-o", str(tmp / "onnx")])  # fmt: skip
    assert status == 0, stderr.getvalue()
    with contextlib.ExitStack() as stack:
        served = {}
        for pod in (STABLE_POD, CANARY_POD):
            md = write_md(tmp / f"{pod}.yaml", "tiny", "onnxruntime", str(tmp / "onnx"))
            served[pod] = stack.enter_context(serving(md, tmp=tmp))
        tfs = RecordedScrape((FIXTURES / "tfserving-metrics.prom").read_text())
        stack.callback(tfs.close)

        def target(pod: str, url: str) -> Target:
            parts = urllib.parse.urlsplit(url)
            return Target(pod, parts.netloc, parts.path, {"namespace": NAMESPACE, "pod": pod})

        targets = [
            target(STABLE_POD, served[STABLE_POD].extra["metrics"]),
            target(CANARY_POD, served[CANARY_POD].extra["metrics"]),
            target(CLEAN_CANARY_POD, served[STABLE_POD].extra["metrics"]),
            target(TFS_CANARY_POD, f"http://{tfs.address}/metrics"),
        ]
        prom = stack.enter_context(run_prometheus(tmp / "prom", targets))

        load = Load()
        load.add("stable", 3, JsonPost(served[STABLE_POD].url + "/infer", _v2("input")))
        load.add("canary", 2, JsonPost(served[CANARY_POD].url + "/infer", _v2("input")))
        # A client sending the wrong input name: HTTP 400 from the canary's real validation.
        load.add("canary-bad", 1, JsonPost(served[CANARY_POD].url + "/infer", _v2("nosuch")))
        load.run(LOAD_SECONDS)
        measured = load.measured
        assert measured["stable"].failures == 0 and measured["canary"].failures == 0
        assert measured["canary-bad"].requests == 0 and measured["canary-bad"].failures > 0
        canary = Measured(
            requests=measured["canary"].requests,
            failures=measured["canary-bad"].failures,
            seconds=measured["canary"].seconds,
        )
        bad = {k: v for k, v in prom.targets_up().items() if v != "up"}
        assert not bad, f"targets not scraped: {bad}"
        yield Run(prom, canary)


def _value(verdict: AnalysisVerdict, name: str) -> float:
    return dict(verdict.values)[name]


def test_a_failing_canary_breaches_its_error_ratio(run: Run) -> None:
    verdict = _evaluate(run.prom, _md("shop", maxErrorRatio=0.05))
    assert verdict.result == Result.BREACH, verdict
    assert "error ratio" in verdict.message and "limit 5.00 %" in verdict.message
    # The canary's own ratio, not one diluted by the stable pod's clean requests.
    truth = run.canary.failures / (run.canary.failures + run.canary.requests)
    got = _value(verdict, "errorRatio")
    assert abs(got - truth) <= TOLERANCE * truth, (got, truth)
    # failureLimit 2: two such checks in a row roll it back.
    md = _md("shop", maxErrorRatio=0.05, failureLimit=2)
    failures = next_failures(next_failures(0, verdict), verdict)
    assert rolls_back(md, failures) and not rolls_back(md, next_failures(0, verdict))


def test_a_clean_canary_passes_and_its_latency_is_measured(run: Run) -> None:
    verdict = _evaluate(run.prom, _md("clean", maxErrorRatio=0.05, maxLatencyMs=10_000))
    assert verdict.result == Result.OK, verdict
    assert _value(verdict, "errorRatio") == 0.0
    latency = _value(verdict, "latencyMs")
    assert 0 < latency < 1000, latency  # a tiny model: well under a second at p99
    # The same canary with a latency limit it cannot meet breaches on latency alone.
    tight = _evaluate(run.prom, _md("clean", maxErrorRatio=0.05, maxLatencyMs=latency / 10))
    assert tight.result == Result.BREACH, tight
    assert "p99 latency" in tight.message and "error ratio 0.00 %" not in tight.message


def test_a_canary_with_no_requests_is_unknown_not_a_breach(run: Run) -> None:
    verdict = _evaluate(run.prom, _md("idle", maxErrorRatio=0.0, maxLatencyMs=0.001))
    assert verdict.result == Result.UNKNOWN, verdict
    assert f"no requests reached the canary in the last {INTERVAL_S}s" in verdict.message


def test_tfserving_queries_on_its_recorded_series(run: Run) -> None:
    # 20 of 1520 requests INVALID_ARGUMENT; p99 of the REST+gRPC histogram: 97.2 ms.
    verdict = _evaluate(run.prom, _md("shop-tfs", "tfserving", maxErrorRatio=0.05,
                                      maxLatencyMs=200))  # fmt: skip
    assert verdict.result == Result.OK, verdict
    ratio, latency = _value(verdict, "errorRatio"), _value(verdict, "latencyMs")
    assert abs(ratio - 20 / 1520) <= 0.05 * 20 / 1520, ratio
    want_ms = (50_000 + (0.99 * 1520 - 1250) / (1520 - 1250) * 50_000) / 1000
    assert abs(latency - want_ms) <= 0.05 * want_ms, (latency, want_ms)
    strict = _evaluate(run.prom, _md("shop-tfs", "tfserving", maxErrorRatio=0.01))
    assert strict.result == Result.BREACH, strict


def test_torchserve_queries_are_accepted_by_prometheus(run: Run) -> None:
    # No TorchServe here (tests/cluster/test_prometheus.py runs one): the queries must parse
    # and, with no series, say "no requests", not "refused".
    verdict = _evaluate(run.prom, _md("shop-ts", "torchserve", maxErrorRatio=0.05,
                                      maxLatencyMs=100))  # fmt: skip
    assert verdict.result == Result.UNKNOWN, verdict
    assert "refused" not in verdict.message and "no requests" in verdict.message, verdict
