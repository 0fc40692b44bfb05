"""TorchServe's overhead over raw torch, on the same model, and the configuration that cuts it.

The model is examples/demo/mlp_model.py (512 features, 1.6 M weights). Each configuration is
packaged with `kubeserve package --format mar` and served by a real TorchServe through
`kubeserve serve` (the config.properties the operator mounts), then driven from 127.0.0.1
by closed-loop clients over keep-alive connections:

  raw           model(x) in this process under torch.no_grad(), batches of
                min(concurrency, max batch): the limit, with no HTTP and no client;
  eager         the .mar holding the eager module, no batching;
  torchscript   --torchscript trace, no batching;
  ts+batching   --torchscript trace, batchSize 16 and maxBatchDelay 2 ms (spec.batching);
  ... 2 workers the same with spec.threads.workers 2 (each worker gets half the threads).

Client and servers share this machine's cores.

    .venv/bin/python bench/torchserve.py [--requests 600] [--concurrency 1 16]
"""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import argparse
import asyncio
import json
import platform
import queue
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
MODEL = f"{REPO / 'examples' / 'demo' / 'mlp_model.py'}:build"
NAME = "mlp"
FEATURES = 512
READY_TIMEOUT_S = 180.0
CONFIGS: dict[str, dict[str, Any]] = {
    "eager": {"package": [], "batching": None},
    "torchscript": {"package": ["--torchscript", "trace"], "batching": None},
    "ts+batching": {
        "package": ["--torchscript", "trace"],
        "batching": {"maxBatchSize": 16, "maxDelayMs": 2},
    },
    "ts+batching, 2 workers": {
        "package": ["--torchscript", "trace"],
        "batching": {"maxBatchSize": 16, "maxDelayMs": 2},
        "threads": {"workers": 2},
    },
}


def package(out: Path, extra: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kubeserve", "package", MODEL, "--input-shape", f"1,{FEATURES}",
         "--format", "mar", "--name", NAME, *extra, "-o", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"kubeserve package failed:\n{done.stderr[-2000:]}")


class Served:
    """`kubeserve serve` of one ModelDeployment: TorchServe behind it, until stop()."""

    def __init__(self, workdir: Path, store: Path, config: dict[str, Any]) -> None:
        spec: dict[str, Any] = {"runtime": "torchserve", "model": {"uri": str(store)}}
        for field in ("batching", "threads"):
            if config.get(field):
                spec[field] = config[field]
        md = workdir / f"{store.name}.yaml"
        md.write_text(
            yaml.safe_dump(
                {"apiVersion": "kubeserve.io/v1alpha1", "kind": "ModelDeployment",
                 "metadata": {"name": NAME}, "spec": spec}
            )
        )  # fmt: skip
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kubeserve", "serve", "-f", str(md), "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=workdir,
            start_new_session=True,
        )  # fmt: skip
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                break
            if line is None:
                raise SystemExit("kubeserve serve exited before serving")
            found = re.search(r"^serving .* at (http://\S+)$", line.strip())
            if found:
                return found.group(1)
        raise SystemExit("TorchServe was not ready in time")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def tree_cpu_seconds(root: int) -> float:
    """CPU time of ``root`` and its descendants (kubeserve serve, Java, the Python workers)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    tree, grew = {root}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        grew = bool(found)
        tree |= found
    return sum(ticks.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")


async def load(url: str, rows: np.ndarray, concurrency: int, requests: int) -> list[float]:
    import aiohttp

    bodies = [json.dumps({"data": rows[i : i + 1].tolist()}).encode() for i in range(len(rows))]
    latencies: list[float] = []
    sent = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            nonlocal sent
            while sent < requests:
                body = bodies[sent % len(bodies)]
                sent += 1
                started = time.perf_counter()
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as response:
                    await response.read()
                    if response.status != 200:
                        raise SystemExit(f"HTTP {response.status}")
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def raw(rows: np.ndarray, concurrency: int, requests: int) -> tuple[float, float]:
    """(requests per second, p50 ms) of model(x) on ready-made batches."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("mlp_model", MODEL.split(":")[0])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build()
    batch = min(concurrency, 16)
    x = torch.from_numpy(rows[:batch].copy())
    with torch.no_grad():
        for _ in range(20):
            model(x)
        times = []
        for _ in range(max(1, requests // batch)):
            started = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - started)
    return batch / statistics.mean(times), statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    print("command: " + " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]))
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    rows = np.random.default_rng(0).standard_normal((64, FEATURES)).astype(np.float32)
    print("| server | concurrency | req/s | p50 ms | x raw throughput | p50 added ms | "
          "server CPU ms/req |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    limits = {c: raw(rows, c, args.requests) for c in args.concurrency}
    for c, (rate, p50) in limits.items():
        print(f"| raw torch | {c} | {rate:.0f} | {p50:.2f} | 1.00 | - | - |")
    with tempfile.TemporaryDirectory(prefix="kubeserve-bench-ts-") as tmp:
        for name, config in CONFIGS.items():
            store = Path(tmp) / re.sub(r"[^a-z0-9]+", "-", name)
            package(store, config["package"])
            served = Served(Path(tmp), store, config)
            try:
                asyncio.run(load(served.url, rows, 4, 100))  # warm the workers up
                for c in args.concurrency:
                    cpu = tree_cpu_seconds(served.process.pid)
                    started = time.perf_counter()
                    latencies = asyncio.run(load(served.url, rows, c, args.requests))
                    seconds = time.perf_counter() - started
                    cpu = tree_cpu_seconds(served.process.pid) - cpu
                    rate = len(latencies) / seconds
                    p50 = statistics.median(latencies) * 1000
                    raw_rate, raw_p50 = limits[c]
                    print(
                        f"| {name} | {c} | {rate:.0f} | {p50:.2f} | {rate / raw_rate:.2f} | "
                        f"+{p50 - raw_p50:.2f} | {cpu / len(latencies) * 1000:.2f} |",
                        flush=True,
                    )
            finally:
                served.stop()


if __name__ == "__main__":
    main()
