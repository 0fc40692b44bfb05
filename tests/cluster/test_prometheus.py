"""Every autoscaling query we generate, and every dashboard expression, run on a real Prometheus.

One Prometheus (Debian's package) scrapes, for about two minutes of bounded load from
127.0.0.1:
- two real ONNX Runtime servers and a real TorchServe (`kubeserve serve`), labelled as the
  pods of ModelDeployments ``signals-onnx`` and ``signals-ts`` in namespace ``signals``;
- recorded scrapes of TF Serving and dcgm-exporter, which cannot run here (promlib);
- the session's operator, which reconciles a real ``signals-onnx`` in the cluster, so the
  dashboard's cold-start, replica and operator panels have data.

The truth each query is judged against, within ±20 %:
- requests/s and requests in flight: what the clients saw (count / seconds; Little's law on
  their latencies);
- queue time: the servers' own counters, read straight from each /metrics before and after
  (the query must turn them into milliseconds per request, for the right pods);
- TF Serving and GPU utilisation: the recorded values.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster_env import CHART, REQUIRED_ENV, RESTRICTED, Operator, Tools
from kubeapi import Kube, condition, eventually
from promlib import (
    PROMETHEUS,
    RECORDED_SECONDS,
    JsonPost,
    Load,
    Prometheus,
    RecordedScrape,
    Target,
    prometheus,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtimes"))
from fixtures_local import TINY_MODEL, serving, write_md

from kubeserve.cli import main as kubeserve_main

NAMESPACE = "signals"
FIXTURES = Path(__file__).parent / "fixtures"
OPERATOR_JOB = "kubeserve-operator"
TOLERANCE = 0.2
# rate(...[2m]) needs two minutes of load behind the instant it is evaluated at; the first
# seconds are the clients starting and the first scrape.
LOAD_SECONDS = 135.0
QUERY_LAG_S = 2.0  # evaluate just before the load stops: the window is all steady load
ROW = [0.5, -1.0, 2.0, 0.25]

# Pod names as the ReplicaSets would make them; the decoys belong to Deployments whose names
# only start with ours (signals-tfs-canary): a selector that takes them fails the test.
ONNX_PODS = ("signals-onnx-7c9d5b8f6-x2k4q", "signals-onnx-7c9d5b8f6-m8n3p")
TS_POD = "signals-ts-5f6d7c8b9-q1w2e"
TFS_POD = "signals-tfs-6b7c8d9f5-a1s2d"
TFS_DECOY = "signals-tfs-canary-6b7c8d9f5-z9x8c"
ONNX_CLIENTS = {ONNX_PODS[0]: 4, ONNX_PODS[1]: 2}
TS_CLIENTS = 3
BATCHING = {"maxBatchSize": 8, "maxDelayMs": 40}

RUNTIME_OF = {"signals-onnx": "onnxruntime", "signals-ts": "torchserve", "signals-tfs": "tfserving"}
PODS_OF = {"signals-onnx": ONNX_PODS, "signals-ts": (TS_POD,), "signals-tfs": (TFS_POD,)}


@dataclass
class Truth:
    rate: float
    concurrency: float
    queue_ms: float
    # For weighting the queue time of several pods: requests and queue-milliseconds counted.
    requests: float = 0.0
    queue_total_ms: float = 0.0


@dataclass
class Run:
    prom: Prometheus
    at: float  # unix time the queries are evaluated at
    truth: dict[str, Truth] = field(default_factory=dict)  # by pod
    rendered: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by MD name

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        return self.prom.query(expr, at=self.at)

    def md_truth(self, md: str) -> Truth:
        pods = [self.truth[p] for p in PODS_OF[md]]
        requests = sum(t.requests for t in pods)
        return Truth(
            rate=sum(t.rate for t in pods),
            concurrency=sum(t.concurrency for t in pods),
            queue_ms=sum(t.queue_total_ms for t in pods) / requests,
        )


def _within(got: float, want: float, what: str) -> None:
    assert want > 0, f"{what}: no truth to compare with ({want})"
    assert abs(got - want) <= TOLERANCE * want, (
        f"{what}: Prometheus says {got:.4g}, the truth is {want:.4g} "
        f"({100 * (got / want - 1):+.0f} %, allowed ±{100 * TOLERANCE:.0f} %)"
    )


# --- the servers, the recorded scrapes, the cluster's ModelDeployment, the load ------------


def _raw_counters(url: str) -> dict[str, float]:
    """name{labels} -> value, straight from a /metrics page (no Prometheus in between)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            values[series] = float(value)
    return values


def _total(values: dict[str, float], name: str) -> float:
    return sum(v for s, v in values.items() if s == name or s.startswith(name + "{"))


def _queue_counters(runtime: str, values: dict[str, float]) -> tuple[float, float]:
    """(queue milliseconds, requests) a server has counted since it started."""
    if runtime == "onnxruntime":
        return (
            1000 * _total(values, "kubeserve_inference_queue_duration_seconds_sum"),
            _total(values, "kubeserve_inference_queue_duration_seconds_count"),
        )
    return (
        1e-3 * _total(values, "ts_queue_latency_microseconds"),
        _total(values, "ts_inference_requests_total"),
    )


def _package(fmt: str, out: Path, *extra: str) -> None:
    stderr = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        status = kubeserve_main(
            ["package", TINY_MODEL, "--input-shape", "1,4", "--format", fmt, *extra, "-o", str(out)]
        )
    assert status == 0, stderr.getvalue()


def _render(tmp: Path, name: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """`kubeserve render` of a ModelDeployment, as a user would run it."""
    path = tmp / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kubeserve.io/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": spec,
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "kubeserve", "render", "-f", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


KEDA_METRICS = [
    {"type": "requestsPerSecond", "target": 20},
    {"type": "queueLatency", "target": 50},
    {"type": "concurrency", "target": 4},
]


def _keda_spec(runtime: str, **extra: Any) -> dict[str, Any]:
    metrics = list(KEDA_METRICS) + extra.pop("metrics", [])
    return {
        "runtime": runtime,
        "model": {"uri": "s3://models/signals"},
        "autoscaling": {"engine": "keda", "minReplicas": 1, "maxReplicas": 4, "metrics": metrics},
        **extra,
    }


def _cluster_md(kube: Kube) -> None:
    """``signals-onnx`` in the cluster: the operator's cold-start and replica series."""
    kube.create(
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": NAMESPACE, "labels": dict(RESTRICTED)}},
        "namespaces",
    )  # fmt: skip
    kube.create(
        {
            "apiVersion": "kubeserve.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "signals-onnx", "namespace": NAMESPACE},
            "spec": {
                "runtime": "onnxruntime",
                "model": {"uri": "s3://models/signals"},
                "replicas": 2,
            },
        },
        "modeldeployments",
    )


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory, operator: Operator, kube: Kube, scheduler: None
) -> Iterator[Run]:
    if PROMETHEUS is None:
        message = "Prometheus is not installed (apt-get install prometheus)"
        if os.environ.get(REQUIRED_ENV) == "1":
            pytest.fail(f"{message} ({REQUIRED_ENV}=1)")
        pytest.skip(message)
    tmp = tmp_path_factory.mktemp("prometheus")
    _package("onnx", tmp / "onnx")
    _package("mar", tmp / "store", "--name", "tiny")
    rendered = {
        "signals-onnx": _render(
            tmp, "signals-onnx",
            _keda_spec("onnxruntime", gpu={"count": 1},
                       metrics=[{"type": "gpuUtilization", "target": 70}]),
        ),
        "signals-ts": _render(tmp, "signals-ts", _keda_spec("torchserve")),
        "signals-tfs": _render(tmp, "signals-tfs", _keda_spec("tfserving")),
        "signals-mig": _render(
            tmp, "signals-mig",
            {**_keda_spec("onnxruntime", gpu={"count": 1, "migProfile": "1g.10gb"}),
             "autoscaling": {"engine": "keda", "minReplicas": 1, "maxReplicas": 4,
                             "metrics": [{"type": "gpuUtilization", "target": 70}]}},
        ),
    }  # fmt: skip
    with contextlib.ExitStack() as stack:
        servers = {}
        for pod in ONNX_PODS:
            md = write_md(tmp / f"{pod}.yaml", "tiny", "onnxruntime", str(tmp / "onnx"),
                          batching=BATCHING)  # fmt: skip
            servers[pod] = ("onnxruntime", stack.enter_context(serving(md, tmp=tmp)))
        md = write_md(tmp / "ts.yaml", "tiny", "torchserve", str(tmp / "store"), batching=BATCHING)
        servers[TS_POD] = ("torchserve", stack.enter_context(serving(md, tmp=tmp)))
        tfs = RecordedScrape((FIXTURES / "tfserving-metrics.prom").read_text())
        dcgm = RecordedScrape((FIXTURES / "dcgm-metrics.prom").read_text())
        stack.callback(tfs.close)
        stack.callback(dcgm.close)

        def pod_target(job: str, pod: str, url: str) -> Target:
            parts = urllib.parse.urlsplit(url)
            return Target(job, parts.netloc, parts.path, {"namespace": NAMESPACE, "pod": pod})

        targets = [pod_target(pod, pod, s.extra["metrics"]) for pod, (_, s) in servers.items()]
        targets += [
            Target("tfserving", tfs.address, "/metrics", {"namespace": NAMESPACE, "pod": TFS_POD}),
            Target("tfserving-canary", tfs.address, "/metrics",
                   {"namespace": NAMESPACE, "pod": TFS_DECOY}),
            Target("dcgm-exporter", dcgm.address, "/metrics", honor_labels=True),
            # As the chart's ServiceMonitor scrapes it: honorLabels keeps the namespace
            # label of the per-ModelDeployment series.
            Target(OPERATOR_JOB, f"127.0.0.1:{operator.metrics_port}", "/metrics",
                   {"namespace": "kubeserve", "pod": "kubeserve-operator-0"},
                   honor_labels=True),
        ]  # fmt: skip
        prom = stack.enter_context(prometheus(tmp / "prom", targets))
        # Created once Prometheus has scraped the operator: its reconcile and pod starts
        # count in the window.
        eventually(
            lambda: prom.query(f'up{{job="{OPERATOR_JOB}"}} == 1'),
            timeout=30, what="a first scrape of the operator",
        )  # fmt: skip
        _cluster_md(kube)

        load = Load()
        for pod, (runtime, served) in servers.items():
            body = {"data": [ROW]} if runtime == "torchserve" else _v2_body()
            clients = TS_CLIENTS if runtime == "torchserve" else ONNX_CLIENTS[pod]
            load.add(pod, clients, JsonPost(served.url + ("" if runtime == "torchserve"
                                                          else "/infer"), body))  # fmt: skip
        before = {pod: _raw_counters(s.extra["metrics"]) for pod, (_, s) in servers.items()}
        load.run(LOAD_SECONDS)
        at = time.time() - QUERY_LAG_S
        after = {pod: _raw_counters(s.extra["metrics"]) for pod, (_, s) in servers.items()}

        result = Run(prom, at, rendered=rendered)
        for pod, (runtime, _) in servers.items():
            measured = load.measured[pod]
            assert measured.failures == 0, f"{pod}: {measured.failures} failed requests"
            queue_ms, requests = (
                b - a
                for a, b in zip(
                    _queue_counters(runtime, before[pod]),
                    _queue_counters(runtime, after[pod]),
                    strict=True,
                )
            )
            result.truth[pod] = Truth(
                rate=measured.rate,
                concurrency=measured.concurrency,
                queue_ms=queue_ms / requests,
                requests=requests,
                queue_total_ms=queue_ms,
            )
        recorded_requests = 1520.0
        result.truth[TFS_POD] = Truth(
            rate=recorded_requests / RECORDED_SECONDS,
            concurrency=60.8 / RECORDED_SECONDS,  # 60.8 s of latency over 100 s
            queue_ms=40.0,
            requests=recorded_requests,
            queue_total_ms=40.0 * recorded_requests,
        )
        bad = {k: v for k, v in prom.targets_up().items() if v != "up"}
        assert not bad, f"targets not scraped: {bad}"
        yield result
    kube.delete("v1", "namespaces", None, NAMESPACE)


def _v2_body() -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}


# --- KEDA: the queries `kubeserve render` puts in ScaledObjects -------------------------------

GPU_TRUTH = {"signals-onnx": (60 + 70) / 2, "signals-mig": 42.0}  # dcgm-metrics.prom


def _keda_cases() -> list[tuple[str, str]]:
    cases = [(md, m["type"]) for md in RUNTIME_OF for m in KEDA_METRICS]
    return [*cases, ("signals-onnx", "gpuUtilization"), ("signals-mig", "gpuUtilization")]


TRIGGER_NAME = {
    "requestsPerSecond": "requests-per-second",
    "queueLatency": "queue-latency",
    "concurrency": "concurrency",
    "gpuUtilization": "gpu-utilization",
}


@pytest.mark.parametrize(("md", "metric"), _keda_cases(), ids=lambda v: str(v))
def test_keda_query_matches_the_truth(run: Run, md: str, metric: str) -> None:
    scaled = next(d for d in run.rendered[md] if d["kind"] == "ScaledObject")
    trigger = next(t for t in scaled["spec"]["triggers"] if t["name"] == TRIGGER_NAME[metric])
    query = trigger["metadata"]["query"]
    result = run.query(query)
    assert len(result) == 1, f"{query} gave {result}"  # KEDA reads one number
    got = result[0][1]
    if metric == "gpuUtilization":
        _within(got, GPU_TRUTH[md], f"{md} {metric}")
        return
    truth = run.md_truth(md)
    want = {
        "requestsPerSecond": truth.rate,
        "queueLatency": truth.queue_ms,
        "concurrency": truth.concurrency,
    }[metric]
    _within(got, want, f"{md} {metric}: {query}")


# --- prometheus-adapter: the rules the chart ships, expanded as the adapter does ---------------


def _chart(tools: Tools, *values: str) -> list[dict[str, Any]]:
    args = [arg for value in values for arg in ("--set", value)]
    rendered = tools.helm("template", "kubeserve", str(CHART), *args).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def _configmap(docs: list[dict[str, Any]], suffix: str) -> dict[str, str]:
    found = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, [d["metadata"]["name"] for d in docs]
    return dict(found[0]["data"])


@pytest.fixture(scope="module")
def adapter_rules(tools: Tools) -> list[dict[str, Any]]:
    data = _configmap(_chart(tools, "prometheusAdapterRules.enabled=true"), "-adapter-rules")
    rules = yaml.safe_load(data["config.yaml"])["rules"]
    assert rules
    return list(rules)


def _expand(template: str, pods: tuple[str, ...]) -> str:
    """What prometheus-adapter does for a Pods metric of these pods in NAMESPACE."""
    matchers = f'namespace="{NAMESPACE}",pod=~"{"|".join(pods)}"'
    return template.replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", "pod")


ADAPTER_TRUTH = {
    "requests_per_second": "rate",
    "queue_latency_ms": "queue_ms",
    "request_latency_ms": "queue_ms",  # TF Serving's stands in for queue time
    "concurrency": "concurrency",
}


def test_every_adapter_rule_matches_the_truth_per_pod(
    run: Run, adapter_rules: list[dict[str, Any]]
) -> None:
    checked = 0
    for rule in adapter_rules:
        served_as = rule["name"]["as"]
        found = run.prom.api("series", **{"match[]": rule["seriesQuery"]})
        assert found, f"{served_as}: seriesQuery {rule['seriesQuery']} discovers nothing"
        assert all(s["namespace"] and s["pod"] for s in found), found[:3]
        raw = {s["__name__"] for s in found}
        assert all(re.search(rule["name"]["matches"], name) for name in raw), (served_as, raw)
        if "gpu" in served_as or "mig" in served_as:
            pods = tuple(s["pod"] for s in found)
            values = dict((labels["pod"], v) for labels, v in run.query(
                _expand(rule["metricsQuery"], pods)))  # fmt: skip
            assert values, served_as
            continue
        md = next(m for m, r in RUNTIME_OF.items() if f"_{r}_" in served_as)
        field = next(f for suffix, f in ADAPTER_TRUTH.items() if served_as.endswith(suffix))
        result = run.query(_expand(rule["metricsQuery"], PODS_OF[md]))
        per_pod = {labels["pod"]: value for labels, value in result}
        assert set(per_pod) == set(PODS_OF[md]), f"{served_as}: {per_pod}"
        for pod, value in per_pod.items():
            _within(value, getattr(run.truth[pod], field), f"{served_as} for {pod}")
        checked += 1
    assert checked == 9, "three signals for each of three runtimes"


def test_gpu_rules_serve_each_pod_its_own_gpu(
    run: Run, adapter_rules: list[dict[str, Any]]
) -> None:
    rule = next(r for r in adapter_rules if r["name"]["as"] == "kubeserve_gpu_utilization")
    per_pod = {
        labels["pod"]: value
        for labels, value in run.query(_expand(rule["metricsQuery"], ONNX_PODS))
    }
    assert per_pod == {ONNX_PODS[0]: 60.0, ONNX_PODS[1]: 70.0}


# --- the Grafana dashboard the chart ships ----------------------------------------------------


def _dashboard_targets(tools: Tools) -> list[tuple[str, str]]:
    import json

    data = _configmap(_chart(tools, "grafanaDashboard.enabled=true"), "-dashboard")
    dashboard = json.loads(data["kubeserve-modeldeployments.json"])
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def _for_each_md(expr: str) -> list[str]:
    """The expression with Grafana's variables set, once per ModelDeployment we have data for."""
    expr = expr.replace("$job", OPERATOR_JOB).replace("$namespace", NAMESPACE)
    if "$modeldeployment" not in expr:
        return [expr]
    names = ["signals-onnx", "signals-ts", "signals-tfs", "signals-mig"]
    return [expr.replace("$modeldeployment", name) for name in names]


def test_every_dashboard_expression_parses_and_returns_data(
    run: Run, tools: Tools, kube: Kube
) -> None:
    # The cluster's signals-onnx has started its pods: cold starts and replicas are recorded.
    eventually(
        lambda: (condition(kube.get("kubeserve.io/v1alpha1", "modeldeployments", NAMESPACE,
                                    "signals-onnx"), "Ready") or {}).get("status") == "True",
        timeout=60, what="signals-onnx Ready in the cluster",
    )  # fmt: skip
    targets = _dashboard_targets(tools)
    assert len(targets) >= 15
    empty = []
    for title, expr in targets:
        answers = [run.prom.query(variant) for variant in _for_each_md(expr)]
        values = [v for answer in answers for _, v in answer]
        if not any(math.isfinite(v) for v in values):
            empty.append(f"{title}: {expr}")
    assert not empty, "expressions with no data:\n" + "\n".join(empty)
