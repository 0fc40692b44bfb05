"""Canary analysis: the canary pods' error ratio and latency, from Prometheus (issue 14).

The contract with the controller (reconcile), which owns the state:

- Call ``evaluate(md, config.prometheus_url, session)`` only when ``md.spec.canary.analysis``
  is set, once per ``analysis.intervalSeconds`` while the canary takes traffic (or a mirror).
  It never raises for Prometheus trouble: it answers an ``AnalysisVerdict``:
  ``ok``, ``breach`` (a threshold is exceeded; the message says which, by how much) or
  ``unknown`` (no requests reached the canary in the window, Prometheus unreachable or
  refusing the query, no series). ``unknown`` is never a breach.
- Keep the count of consecutive breaches in status (e.g. ``status.canary.analysisFailures``)
  and update it with ``next_failures(previous, verdict)``: a breach adds one, ok resets to
  zero, unknown keeps the count. ``rolls_back(md, failures)`` says when ``failureLimit`` is
  reached; the rollback's cause is the verdict's message.
- ``queries(md)`` is pure: the PromQL, for ``kubeserve render``-style inspection, docs and
  tests. Each query is one number over the canary's pods only (``namespace`` and a ``pod``
  regex of the canary Deployment, as the autoscaling signals select pods), over a window of
  ``intervalSeconds``.

Per runtime, from the runtime's own series:

- onnxruntime (our server): ``kubeserve_inference_requests_total{code}``; error = code not
  2xx. Latency: ``histogram_quantile`` over ``kubeserve_inference_request_duration_seconds``.
- tfserving: ``:tensorflow:serving:request_count{status}``; error = status not ``OK``.
  Latency: ``histogram_quantile`` over ``:tensorflow:serving:request_latency`` (microseconds).
- torchserve (metrics_mode prometheus, verified on a real TorchServe): the frontend's
  ``Requests2XX``/``Requests4XX``/``Requests5XX`` counters (no ``_total`` suffix; the 4XX and
  5XX series appear with the first error). They count every frontend request, health and
  management calls included, so the ratio is errors / all frontend requests and is
  understated when real traffic is tiny next to the probes; it is reported only while
  ``ts_inference_requests_total`` rises. TorchServe has no latency histogram, only sums:
  latency is the mean (``ts_inference_latency_microseconds`` / ``ts_inference_requests_total``),
  whatever ``latencyQuantile`` says, and the message says "mean".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiohttp

from .api import ModelDeployment, Runtime
from .resources.autoscaling.signals import NAMESPACE_LABEL, POD_LABEL, pod_name_regex
from .resources.canary import canary_name

# Bound on one Prometheus query (the HTTP request and Prometheus's own evaluation).
QUERY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class AnalysisQueries:
    """One PromQL expression per threshold set; None where the threshold is unset."""

    error_ratio: str | None
    latency_ms: str | None
    # "p99" style for a histogram quantile, "mean" where the runtime has only sums.
    latency_kind: str


class Result(StrEnum):
    OK = "ok"
    BREACH = "breach"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class AnalysisVerdict:
    result: Result
    message: str = ""
    # What was measured: "errorRatio", "latencyMs" (absent when there was no number).
    values: tuple[tuple[str, float], ...] = ()

    @classmethod
    def ok(cls, message: str = "", values: tuple[tuple[str, float], ...] = ()) -> AnalysisVerdict:
        return cls(Result.OK, message, values)

    @classmethod
    def breach(cls, message: str, values: tuple[tuple[str, float], ...] = ()) -> AnalysisVerdict:
        return cls(Result.BREACH, message, values)

    @classmethod
    def unknown(cls, message: str, values: tuple[tuple[str, float], ...] = ()) -> AnalysisVerdict:
        return cls(Result.UNKNOWN, message, values)


def canary_selector(md: ModelDeployment) -> str:
    """PromQL label matchers for the canary Deployment's pods, and no stable pod."""
    return f'{NAMESPACE_LABEL}="{md.namespace}",{POD_LABEL}=~"{pod_name_regex(canary_name(md))}"'


def _quantile_name(quantile: float) -> str:
    return f"p{100 * quantile:g}"


def queries(md: ModelDeployment) -> AnalysisQueries:
    """The PromQL of md's canary analysis; ValueError without spec.canary.analysis."""
    canary = md.spec.canary
    analysis = canary.analysis if canary else None
    if analysis is None:
        raise ValueError(f"{md.namespace}/{md.name} has no spec.canary.analysis")
    sel = canary_selector(md)
    w = f"[{analysis.interval_seconds}s]"
    q = analysis.latency_quantile

    def rate(series: str, extra: str = "") -> str:
        matchers = f"{sel},{extra}" if extra else sel
        return f"sum(rate({series}{{{matchers}}}{w}))"

    runtime = md.spec.runtime
    if runtime == Runtime.ONNXRUNTIME:
        total = "kubeserve_inference_requests_total"
        # No error series exists until the first error: "or vector(0)"; no request at all
        # leaves the denominator empty ("> 0"), so no number: unknown, not ok.
        failed = rate(total, 'code!~"2.."')
        errors = f"({failed} or vector(0)) / ({rate(total)} > 0)"
        latency = (
            f"1000 * histogram_quantile({q:g}, sum by (le) (rate("
            f"kubeserve_inference_request_duration_seconds_bucket{{{sel}}}{w})))"
        )
        kind = _quantile_name(q)
    elif runtime == Runtime.TFSERVING:
        total = ":tensorflow:serving:request_count"
        failed = rate(total, 'status!="OK"')
        errors = f"({failed} or vector(0)) / ({rate(total)} > 0)"
        latency = (
            f"1e-3 * histogram_quantile({q:g}, sum by (le) (rate("
            f":tensorflow:serving:request_latency_bucket{{{sel}}}{w})))"
        )
        kind = _quantile_name(q)
    else:
        failed = f"({rate('Requests4XX')} or vector(0)) + ({rate('Requests5XX')} or vector(0))"
        everything = f"{rate('Requests2XX')} + {failed}"
        inference = rate("ts_inference_requests_total")
        errors = f"(({failed}) / ({everything} > 0)) and on() ({inference} > 0)"
        latency = f"1e-3 * {rate('ts_inference_latency_microseconds')} / ({inference} > 0)"
        kind = "mean"
    return AnalysisQueries(
        error_ratio=errors if analysis.max_error_ratio is not None else None,
        latency_ms=latency if analysis.max_latency_ms is not None else None,
        latency_kind=kind,
    )


async def query_scalar(
    session: aiohttp.ClientSession,
    prometheus_url: str,
    expr: str,
    *,
    timeout_s: float = QUERY_TIMEOUT_S,
) -> float | None:
    """An instant query's one number; None when it has none (empty vector, NaN).

    Raises ``AnalysisError`` when Prometheus cannot answer (unreachable, timeout, refused).
    """
    url = prometheus_url.rstrip("/") + "/api/v1/query"
    params = {"query": expr, "timeout": f"{timeout_s:g}s"}
    try:
        async with session.get(
            url, params=params, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as response:
            body: Any = await response.json(content_type=None)
    except TimeoutError as exc:
        raise AnalysisError(
            f"Prometheus at {prometheus_url} did not answer in {timeout_s:g} s"
        ) from exc
    except (aiohttp.ClientError, ValueError) as exc:
        raise AnalysisError(f"Prometheus at {prometheus_url}: {exc}") from exc
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else body
        raise AnalysisError(f"Prometheus refused the query {expr!r}: {error}")
    data = body["data"]
    if data["resultType"] == "scalar":
        values = [data["result"][1]]
    else:
        values = [item["value"][1] for item in data["result"]]
    if not values:
        return None
    if len(values) > 1:
        raise AnalysisError(f"the query {expr!r} gave {len(values)} series, not one")
    value = float(values[0])
    return None if math.isnan(value) else value


class AnalysisError(Exception):
    """Prometheus could not answer a query."""


async def evaluate(
    md: ModelDeployment,
    prometheus_url: str,
    session: aiohttp.ClientSession,
    *,
    timeout_s: float = QUERY_TIMEOUT_S,
) -> AnalysisVerdict:
    """One analysis check of md's canary, now. Breach beats unknown beats ok."""
    canary = md.spec.canary
    analysis = canary.analysis if canary else None
    if analysis is None:
        raise ValueError(f"{md.namespace}/{md.name} has no spec.canary.analysis")
    found = queries(md)
    window = f"{analysis.interval_seconds}s"
    checks = []
    if found.error_ratio is not None and analysis.max_error_ratio is not None:
        checks.append(("errorRatio", found.error_ratio, analysis.max_error_ratio))
    if found.latency_ms is not None and analysis.max_latency_ms is not None:
        checks.append(("latencyMs", found.latency_ms, analysis.max_latency_ms))
    values: list[tuple[str, float]] = []
    breaches: list[str] = []
    unknowns: list[str] = []
    fine: list[str] = []
    for name, expr, limit in checks:
        try:
            value = await query_scalar(session, prometheus_url, expr, timeout_s=timeout_s)
        except AnalysisError as exc:
            unknowns.append(str(exc))
            continue
        if value is None:
            unknowns.append(
                f"{_label(name, found)}: no requests reached the canary in the last {window}"
            )
            continue
        values.append((name, value))
        shown = f"{_show(name, value)} (limit {_show(name, limit)}, last {window})"
        text = f"{_label(name, found)} {shown}"
        (breaches if value > limit else fine).append(text)
    if breaches:
        return AnalysisVerdict.breach("canary analysis: " + "; ".join(breaches), tuple(values))
    if unknowns:
        return AnalysisVerdict.unknown("canary analysis: " + "; ".join(unknowns), tuple(values))
    return AnalysisVerdict.ok("canary analysis: " + "; ".join(fine), tuple(values))


def _label(name: str, found: AnalysisQueries) -> str:
    return "error ratio" if name == "errorRatio" else f"{found.latency_kind} latency"


def _show(name: str, value: float) -> str:
    return f"{100 * value:.2f} %" if name == "errorRatio" else f"{value:.1f} ms"


def next_failures(previous: int, verdict: AnalysisVerdict) -> int:
    """Consecutive breaches after this verdict: +1 on breach, 0 on ok, unchanged on unknown."""
    if verdict.result == Result.BREACH:
        return previous + 1
    if verdict.result == Result.OK:
        return 0
    return previous


def rolls_back(md: ModelDeployment, failures: int) -> bool:
    """True once failures reaches spec.canary.analysis.failureLimit."""
    canary = md.spec.canary
    analysis = canary.analysis if canary else None
    return analysis is not None and failures >= analysis.failure_limit
