"""`kubeserve serve` with spec.canary: stable and canary side by side behind one port.

Real processes on 127.0.0.1: two ONNX models that answer differently (sum of the features
times 1 for stable, times 2 for the canary), served by `kubeserve serve` with a canary; every
answer's X-Kubeserve-Track header and its value must agree, and the counts must be exact
(smooth weighted round-robin is deterministic).
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import itertools
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from fixtures_local import serving, write_md

from kubeserve.local.serve.canary import TRACK_HEADER, SmoothWeightedRoundRobin, split

pytestmark = pytest.mark.runtimes

NAME = "tiny"
ROW = [1.0, 1.0, 1.0, 1.0]
ANSWER = {"stable": 4.0, "canary": 8.0}  # sum(ROW) x 1, sum(ROW) x 2
REQUESTS = 100
METRICS_WAIT_S = 30.0


def _onnx_model(path: Path, factor: float) -> Path:
    """model.onnx computing input @ [[factor]]*4: one FP32 output per row."""
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("weight", TensorProto.FLOAT, [4, 1], [factor] * 4)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "weight"], ["output"])],
        "sum_times",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.mkdir(parents=True)
    onnx.save(model, str(path / "model.onnx"))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("canary")
    return _onnx_model(root / "v1", 1.0), _onnx_model(root / "v2", 2.0)


def _md(tmp: Path, models: tuple[Path, Path], **canary: Any) -> Path:
    stable, candidate = models
    return write_md(
        tmp / "md.yaml",
        NAME,
        "onnxruntime",
        stable.as_uri(),
        canary={"model": {"uri": candidate.as_uri()}, **canary},
    )


def _infer(url: str) -> tuple[str, float]:
    import json

    body = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}
    ).encode()
    request = urllib.request.Request(
        f"{url}/infer", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        track = response.headers[TRACK_HEADER]
        value = json.loads(response.read())["outputs"][0]["data"][0]
    return track, float(value)


def _tracks(lines: list[str]) -> dict[str, str]:
    """The per-track URLs of the "serving" lines: {'stable': url, 'canary': url}."""
    found = {}
    for line in lines:
        match = re.match(r"  (stable|canary):\s+(http://\S+)", line)
        if match:
            found[match.group(1)] = match.group(2)
    assert set(found) == {"stable", "canary"}, lines
    return found


def _requests_counted(url: str) -> int:
    """kubeserve_inference_requests_total (code 200) from a track's own /metrics."""
    origin = re.match(r"http://[^/]+", url)
    assert origin
    with urllib.request.urlopen(f"{origin.group(0)}/metrics", timeout=30) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("kubeserve_inference_requests_total{") and 'code="200"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def _send(url: str) -> dict[str, int]:
    counts = {"stable": 0, "canary": 0}
    for _ in range(REQUESTS):
        track, value = _infer(url)
        assert value == ANSWER[track], (track, value)  # the header tells the truth
        counts[track] += 1
    return counts


@pytest.mark.parametrize("percent", [0, 10, 35, 50, 100])
def test_smooth_round_robin_is_exact_and_spread(percent: int) -> None:
    rr = split(percent)
    picks = [rr.pick() for _ in range(REQUESTS)]
    assert picks.count("canary") == percent
    if 0 < percent <= 50:
        # Spread: never two canary picks in a row below 50 %.
        assert all(not (a == b == "canary") for a, b in itertools.pairwise(picks))


def test_round_robin_refuses_no_weight() -> None:
    with pytest.raises(ValueError):
        SmoothWeightedRoundRobin({"stable": 0, "canary": 0})


def test_ten_percent_goes_to_the_canary(models: tuple[Path, Path], tmp_path: Path) -> None:
    with serving(_md(tmp_path, models, trafficPercent=10), tmp=tmp_path) as served:
        assert served.url.endswith(f"/v2/models/{NAME}")
        assert any("stable 90 / canary 10" in line for line in served.lines), served.lines
        tracks = _tracks(served.lines)
        assert served.base not in tracks.values()  # the front has its own port
        assert _send(served.url) == {"stable": 90, "canary": 10}
        # Each track's own server saw exactly its share.
        assert _requests_counted(tracks["stable"]) == 90
        assert _requests_counted(tracks["canary"]) == 10
        assert served.stop() == 0
    assert "stopping" in served.stderr()


def test_mirror_answers_from_stable_and_copies_to_the_canary(
    models: tuple[Path, Path], tmp_path: Path
) -> None:
    md = _md(tmp_path, models, trafficPercent=10, mirror=True)
    with serving(md, tmp=tmp_path) as served:
        assert any("stable 100 / mirror 10" in line for line in served.lines), served.lines
        tracks = _tracks(served.lines)
        assert _send(served.url) == {"stable": REQUESTS, "canary": 0}
        assert _requests_counted(tracks["stable"]) == REQUESTS
        # The copies are fire-and-forget: wait (bounded) until the canary has answered them.
        deadline = time.monotonic() + METRICS_WAIT_S
        while (mirrored := _requests_counted(tracks["canary"])) < 10:
            assert time.monotonic() < deadline, f"canary saw {mirrored} mirrored requests"
            time.sleep(0.1)
        assert mirrored == 10
        assert served.stop() == 0


def test_zero_percent_sends_nothing_to_the_canary(
    models: tuple[Path, Path], tmp_path: Path
) -> None:
    with serving(_md(tmp_path, models, trafficPercent=0), tmp=tmp_path) as served:
        tracks = _tracks(served.lines)
        assert _send(served.url) == {"stable": REQUESTS, "canary": 0}
        assert _requests_counted(tracks["canary"]) == 0
        assert served.stop() == 0
