"""Cold start of the storage initializer with and without the model cache, against a real S3.

One ONNX model (a MatMul whose weight makes it --size-mb big, built with onnx and checked
with onnxruntime) is uploaded to moto's S3 server on 127.0.0.1. Then the real storage
initializer CLI (python -m kubeserve.dataplane.storage, as the init container runs it) fills a
fresh model directory --runs times in each mode:

  off    no cache: every pod downloads;
  miss   a cache, empty each time: download, fill the cache, copy out (a model's first pod);
  hit    a cache already holding the model: one HEAD to the source, copy out, no GET.

Reported per mode: the median of the CLI's wall time (process start included, as for an init
container) and of the downloadSeconds of its termination report (the initializer's own
work), then off/hit ratios. moto on loopback is the best case for a download: a real object
store across a network makes "off" and "miss" slower and leaves "hit" as it is.

    .venv/bin/python bench/coldstart.py                 # 8 MB, 5 runs per mode
    .venv/bin/python bench/coldstart.py --size-mb 64 --runs 5
"""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # before onnxruntime is imported

import argparse
import json
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ACCESS_KEY, SECRET_KEY = "AKIABENCH", "bench-secret"
BUCKET, KEY = "models", "coldstart/model.onnx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def onnx_model(size_mb: int) -> bytes:
    """A valid ONNX model (y = x @ W) whose float32 weight W is about ``size_mb`` MB."""
    import numpy as np
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    cols = 1024
    rows = max(1, size_mb * (1 << 20) // (4 * cols))
    weight = np.random.default_rng(0).standard_normal((rows, cols), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "coldstart",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, cols])],
        [numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data: bytes = model.SerializeToString()
    onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])  # it loads
    return data


class Moto:
    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
        self.port = free_port()
        self.log = (workdir / "moto.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(self.port)], stdout=self.log, stderr=self.log
        )
        self.endpoint = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit("moto_server did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def run_initializer(
    env: dict[str, str], dest: Path, report: Path, cache_dir: Path | None
) -> dict[str, Any]:
    args = [f"s3://{BUCKET}/{KEY}", str(dest), "--runtime", "onnxruntime"]
    if cache_dir is not None:
        args += [f"--cache-dir={cache_dir}", "--cache-max-size=10Gi"]
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "kubeserve.dataplane.storage", *args],
        env={**env, "KUBESERVE_TERMINATION_LOG": str(report)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"the storage initializer failed:\n{proc.stderr[-2000:]}")
    record: dict[str, Any] = json.loads(report.read_text())
    return {"wall": wall, **record}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mb", type=int, default=8, help="model size (default 8)")
    parser.add_argument("--runs", type=int, default=5, help="runs per mode (default 5)")
    args = parser.parse_args()
    import boto3  # type: ignore[import-untyped]

    with tempfile.TemporaryDirectory(prefix="kubeserve-coldstart-") as tmp:
        work = Path(tmp)
        moto = Moto(work)
        try:
            s3 = boto3.client(
                "s3",
                endpoint_url=moto.endpoint,
                aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY,
                region_name="us-east-1",
            )
            s3.create_bucket(Bucket=BUCKET)
            body = onnx_model(args.size_mb)
            s3.put_object(Bucket=BUCKET, Key=KEY, Body=body)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "KUBESERVE_"))}
            env.update(
                AWS_ACCESS_KEY_ID=ACCESS_KEY,
                AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                AWS_ENDPOINT_URL=moto.endpoint,
                AWS_REGION="us-east-1",
                AWS_EC2_METADATA_DISABLED="true",
                KUBESERVE_CREDENTIALS_DIR=str(work / "no-secret"),
                NO_PROXY="127.0.0.1",
                no_proxy="127.0.0.1",
            )
            warm = work / "warm-cache"
            run_initializer(env, work / "warmup", work / "r-warmup", warm)  # fills "warm"
            results: dict[str, list[dict[str, Any]]] = {"off": [], "miss": [], "hit": []}
            for i in range(args.runs):  # interleaved, so drift hits every mode alike
                for mode in results:
                    cache = {"off": None, "miss": work / f"cache-{i}", "hit": warm}[mode]
                    got = run_initializer(env, work / f"{mode}-{i}", work / f"r-{mode}-{i}", cache)
                    assert got["cache"] == mode, got
                    assert got["bytes"] == len(body), got
                    results[mode].append(got)
        finally:
            moto.stop()

    print(f"model: {len(body) / 1e6:.1f} MB ONNX at s3://{BUCKET}/{KEY} (moto on 127.0.0.1)")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"{'mode':6} {'wall s (median)':>16} {'downloadSeconds (median)':>25}")
    medians = {}
    for mode, runs in results.items():
        wall = statistics.median(r["wall"] for r in runs)
        work_s = statistics.median(r["downloadSeconds"] for r in runs)
        medians[mode] = (wall, work_s)
        print(f"{mode:6} {wall:16.3f} {work_s:25.3f}")
    off, hit = medians["off"], medians["hit"]
    print(
        f"off/hit: wall {off[0] / hit[0]:.2f}x, downloadSeconds {off[1] / max(hit[1], 1e-3):.2f}x; "
        f"miss/off: wall {medians['miss'][0] / off[0]:.2f}x"
    )
    print("command: " + shlex.join([".venv/bin/python", "bench/coldstart.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
