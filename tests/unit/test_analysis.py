"""Canary analysis (issue 14): the PromQL per runtime, the verdicts, the failure count.

The queries run on a real Prometheus in tests/cluster/test_canary_analysis.py; here a small
HTTP server on 127.0.0.1 answers as Prometheus's /api/v1/query does.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kubeserve.analysis import (
    AnalysisVerdict,
    Result,
    canary_selector,
    evaluate,
    next_failures,
    queries,
    rolls_back,
)
from kubeserve.api import ModelDeployment

STABLE_POD = "resnet-7c9d5b8f6-x2k4q"
CANARY_POD = "resnet-canary-6b7c8d9f5-z9x8c"


def md(runtime: str = "onnxruntime", name: str = "resnet", **analysis: Any) -> ModelDeployment:
    return ModelDeployment.parse(
        {
            "apiVersion": "kubeserve.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": "ml", "uid": "u-1"},
            "spec": {
                "runtime": runtime,
                "model": {"uri": "s3://models/resnet-v1"},
                "canary": {
                    "model": {"uri": "s3://models/resnet-v2"},
                    "trafficPercent": 10,
                    "analysis": analysis or {"maxErrorRatio": 0.05, "maxLatencyMs": 250},
                },
            },
        }
    )


def _pod_regex(expr: str) -> str:
    regexes = set(re.findall(r'pod=~"([^"]+)"', expr))
    assert len(regexes) == 1, expr
    return regexes.pop().replace("\\\\", "\\")


# --- the queries ------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", ["onnxruntime", "tfserving", "torchserve"])
def test_every_query_selects_the_canary_pods_and_no_stable_pod(runtime: str) -> None:
    found = queries(md(runtime))
    for expr in (found.error_ratio, found.latency_ms):
        assert expr is not None
        assert 'namespace="ml"' in expr
        regex = _pod_regex(expr)
        assert re.fullmatch(regex, CANARY_POD)
        assert not re.fullmatch(regex, STABLE_POD)
        # Every series selector carries the canary matchers: none reads all pods.
        selectors = re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*\{", expr)
        assert selectors
        assert len(selectors) == expr.count("{" + canary_selector(md(runtime))), expr
        assert "[60s]" in expr and "[2m]" not in expr  # the window is intervalSeconds


def test_onnxruntime_queries() -> None:
    found = queries(md("onnxruntime", maxErrorRatio=0.05, maxLatencyMs=250, latencyQuantile=0.95))
    sel = canary_selector(md())
    assert found.error_ratio == (
        f'(sum(rate(kubeserve_inference_requests_total{{{sel},code!~"2.."}}[60s])) or vector(0))'
        f" / (sum(rate(kubeserve_inference_requests_total{{{sel}}}[60s])) > 0)"
    )
    assert found.latency_ms == (
        "1000 * histogram_quantile(0.95, sum by (le) (rate("
        f"kubeserve_inference_request_duration_seconds_bucket{{{sel}}}[60s])))"
    )
    assert found.latency_kind == "p95"


def test_tfserving_errors_are_statuses_other_than_ok_and_latency_is_in_microseconds() -> None:
    found = queries(md("tfserving", maxErrorRatio=0.01, maxLatencyMs=100, intervalSeconds=30))
    assert found.error_ratio is not None and found.latency_ms is not None
    assert ':tensorflow:serving:request_count{namespace="ml",' in found.error_ratio
    assert 'status!="OK"}[30s]' in found.error_ratio
    assert found.latency_ms.startswith("1e-3 * histogram_quantile(0.99, ")
    assert ":tensorflow:serving:request_latency_bucket{" in found.latency_ms
    assert found.latency_kind == "p99"


def test_torchserve_uses_its_frontend_status_counters_and_a_mean_latency() -> None:
    found = queries(md("torchserve"))
    assert found.error_ratio is not None and found.latency_ms is not None
    for counter in ("Requests2XX{", "Requests4XX{", "Requests5XX{"):
        assert counter in found.error_ratio
    # Only while inference requests arrive: probes alone give no ratio.
    sel = canary_selector(md("torchserve"))
    assert found.error_ratio.endswith(
        f"and on() (sum(rate(ts_inference_requests_total{{{sel}}}[60s])) > 0)"
    )
    assert "ts_inference_latency_microseconds{" in found.latency_ms
    assert "histogram_quantile" not in found.latency_ms
    assert found.latency_kind == "mean"


def test_only_the_thresholds_set_are_queried() -> None:
    assert queries(md(maxErrorRatio=0.1)).latency_ms is None
    assert queries(md(maxLatencyMs=10)).error_ratio is None


def test_a_long_name_keeps_the_canary_regex_apart_from_the_stable() -> None:
    name = "a" * 50
    regex = _pod_regex(queries(md(name=name)).error_ratio or "")
    # The stable's pods: "<name>-<hash>-<random>", cut at 58 characters by generateName.
    stable_pod = (name + "-7c9d5b8f6-")[:58] + "x2k4q"
    assert not re.fullmatch(regex, stable_pod)


# --- evaluate against an HTTP server answering like Prometheus --------------------------------

Answer = Callable[[str], dict[str, Any] | web.Response]


def vector(value: str) -> dict[str, Any]:
    result = [{"metric": {}, "value": [1.0, value]}]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


EMPTY = {"status": "success", "data": {"resultType": "vector", "result": []}}


@pytest.fixture
async def prometheus() -> AsyncIterator[tuple[str, list[Answer], list[str]]]:
    answers: list[Answer] = []
    seen: list[str] = []

    async def query(request: web.Request) -> web.StreamResponse:
        expr = request.query["query"]
        seen.append(expr)
        answer = answers[0](expr)
        if isinstance(answer, web.StreamResponse):
            return answer
        return web.json_response(answer)

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", answers, seen
    await runner.cleanup()


async def _evaluate(url: str, model: ModelDeployment, **kw: Any) -> AnalysisVerdict:
    async with aiohttp.ClientSession() as session:
        return await evaluate(model, url, session, **kw)


def _by_kind(error: dict[str, Any], latency: dict[str, Any]) -> Answer:
    return lambda expr: latency if "histogram_quantile" in expr else error


async def test_verdicts(prometheus: tuple[str, list[Answer], list[str]]) -> None:
    url, answers, seen = prometheus
    model = md(maxErrorRatio=0.05, maxLatencyMs=250)

    answers[:] = [_by_kind(vector("0.01"), vector("120"))]
    verdict = await _evaluate(url, model)
    assert verdict.result == Result.OK, verdict
    assert dict(verdict.values) == {"errorRatio": 0.01, "latencyMs": 120.0}
    assert len(seen) == 2

    answers[:] = [_by_kind(vector("0.2"), vector("120"))]
    verdict = await _evaluate(url, model)
    assert verdict.result == Result.BREACH
    assert "error ratio 20.00 % (limit 5.00 %, last 60s)" in verdict.message

    answers[:] = [_by_kind(vector("0"), vector("400"))]
    verdict = await _evaluate(url, model)
    assert verdict.result == Result.BREACH
    assert "p99 latency 400.0 ms (limit 250.0 ms" in verdict.message

    # No requests to the canary: an empty vector, or NaN from a histogram of zeros.
    answers[:] = [_by_kind(EMPTY, vector("NaN"))]
    verdict = await _evaluate(url, model)
    assert verdict.result == Result.UNKNOWN
    assert "no requests reached the canary in the last 60s" in verdict.message

    # A breach beats an unknown.
    answers[:] = [_by_kind(vector("0.5"), vector("NaN"))]
    assert (await _evaluate(url, model)).result == Result.BREACH

    # At the threshold is not a breach.
    answers[:] = [_by_kind(vector("0.05"), vector("250"))]
    assert (await _evaluate(url, model)).result == Result.OK


async def test_prometheus_trouble_is_unknown_never_a_breach(
    prometheus: tuple[str, list[Answer], list[str]],
) -> None:
    url, answers, _ = prometheus
    model = md(maxErrorRatio=0.05)

    refused = {"status": "error", "errorType": "bad_data", "error": "parse error"}
    answers[:] = [lambda _: web.json_response(refused, status=400)]
    verdict = await _evaluate(url, model)
    assert verdict.result == Result.UNKNOWN and "parse error" in verdict.message

    answers[:] = [lambda _: web.Response(status=502, text="<html>bad gateway</html>")]
    assert (await _evaluate(url, model)).result == Result.UNKNOWN

    series = [{"metric": {"a": a}, "value": [1, "0.1"]} for a in ("1", "2")]
    two = {"status": "success", "data": {"resultType": "vector", "result": series}}
    answers[:] = [lambda _: two]
    verdict = await _evaluate(url, model)
    assert verdict.result == Result.UNKNOWN and "2 series" in verdict.message

    # Nothing listening: refused at once.
    verdict = await _evaluate("http://127.0.0.1:9", model)
    assert verdict.result == Result.UNKNOWN and "127.0.0.1:9" in verdict.message


async def test_a_hanging_prometheus_is_bounded() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response(EMPTY)

    app = web.Application()
    app.router.add_get("/api/v1/query", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        started = asyncio.get_running_loop().time()
        verdict = await _evaluate(
            f"http://127.0.0.1:{runner.addresses[0][1]}", md(maxErrorRatio=0.05), timeout_s=0.3
        )
        assert asyncio.get_running_loop().time() - started < 3
    finally:
        await runner.cleanup()
    assert verdict.result == Result.UNKNOWN and "did not answer in 0.3 s" in verdict.message


# --- the failure count ------------------------------------------------------------------------


def test_failures_count_consecutive_breaches_and_unknown_keeps_the_count() -> None:
    breach, ok, unknown = (
        AnalysisVerdict.breach("x"),
        AnalysisVerdict.ok(),
        AnalysisVerdict.unknown("no data"),
    )
    failures = 0
    history = []
    for verdict in (breach, unknown, breach, ok, breach):
        failures = next_failures(failures, verdict)
        history.append(failures)
    assert history == [1, 1, 2, 0, 1]
    model = md(maxErrorRatio=0.05, failureLimit=2)
    assert not rolls_back(model, 1)
    assert rolls_back(model, 2)


def test_queries_and_evaluate_need_an_analysis() -> None:
    plain = ModelDeployment.parse(
        {"apiVersion": "kubeserve.io/v1alpha1", "kind": "ModelDeployment",
         "metadata": {"name": "resnet", "namespace": "ml"},
         "spec": {"runtime": "onnxruntime", "model": {"uri": "s3://models/resnet-v1"}}}
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"no spec\.canary\.analysis"):
        queries(plain)
    assert not rolls_back(plain, 100)
