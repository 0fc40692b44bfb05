"""ONNX Runtime under a CPU quota: threads sized to the machine vs threads sized to the quota.

A container sees the node's cores but gets only its CPU limit, enforced by the kernel's CFS
quota: a runtime that starts one thread per core burns the quota early in each period and is
throttled for the rest of it (issue 16). This bench makes that situation on one machine:

  1. a cgroup with a CPU quota (cgroup v2 cpu.max, or v1 cpu.cfs_quota_us, under
     /sys/fs/cgroup; needs root). Without one it falls back to `taskset -c 0`, which is
     affinity, not a quota: ORT's default then is still one thread per physical core;
  2. in it, for each setting, a fresh process that creates an InferenceSession of the CNN from
     bench/onnx_server.py and runs it back to back at batch 1 for --seconds:
       default  intra_op_num_threads=0: ONNX Runtime's default, one thread per physical core
       budget   intra_op_num_threads = the budget kubeserve.cpu reads inside the cgroup (what
                our server does at startup)
     each with ORT's idle spinning on (ORT's default) and off (our server's default);
  3. the cgroup's throttling counters (nr_throttled, throttled_time) around each run.

    sudo .venv/bin/python bench/threads.py                 # 1-CPU quota, 6 s per run
    sudo .venv/bin/python bench/threads.py --cpus 1.5 --seconds 8

Every run stays under about 60 s in all. --child is internal: the bench runs itself.
"""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # before onnxruntime is imported

import argparse
import contextlib
import json
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

CGROUP = Path("/sys/fs/cgroup")
NAME = f"kubeserve-bench-threads-{os.getpid()}"
PERIOD_US = 100_000


# -- the quota --------------------------------------------------------------------------------


@contextlib.contextmanager
def quota(cpus: float) -> Iterator[tuple[str, Path | None]]:
    """A child cgroup with the quota: (how, folder whose cgroup.procs admits a PID)."""
    quota_us = round(cpus * PERIOD_US)
    folder: Path | None = None
    how = ""
    try:
        if (CGROUP / "cgroup.controllers").is_file():  # v2
            if "cpu" in (CGROUP / "cgroup.subtree_control").read_text().split():
                folder = CGROUP / NAME
                folder.mkdir()
                (folder / "cpu.max").write_text(f"{quota_us} {PERIOD_US}\n")
                how = f"cgroup v2 {folder}/cpu.max = '{quota_us} {PERIOD_US}'"
        elif (CGROUP / "cpu" / "cpu.cfs_quota_us").is_file():  # v1
            folder = CGROUP / "cpu" / NAME
            folder.mkdir()
            (folder / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
            (folder / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")
            how = f"cgroup v1 {folder}/cpu.cfs_quota_us = {quota_us} / {PERIOD_US}"
    except OSError as exc:
        print(f"no cgroup ({exc}); falling back to taskset -c 0", file=sys.stderr)
        folder = None
    try:
        yield (how or "taskset -c 0 (affinity, not a quota)"), folder
    finally:
        if folder is not None:
            with contextlib.suppress(OSError):
                folder.rmdir()


def throttling(folder: Path | None) -> dict[str, float]:
    if folder is None:
        return {}
    stat = dict(line.split() for line in (folder / "cpu.stat").read_text().splitlines())
    # v1: nr_throttled, throttled_time (ns); v2: nr_throttled, throttled_usec.
    seconds = (
        float(stat["throttled_usec"]) / 1e6
        if "throttled_usec" in stat
        else float(stat.get("throttled_time", 0)) / 1e9
    )
    return {
        "periods": float(stat.get("nr_periods", 0)),
        "throttled": float(stat.get("nr_throttled", 0)),
        "seconds": seconds,
    }


# -- one run ----------------------------------------------------------------------------------


def child(args: argparse.Namespace) -> None:
    import onnxruntime as ort

    from kubeserve.cpu import read_budget

    budget = read_budget()
    threads = args.threads if args.threads >= 0 else (budget.cpus or 0)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    spin = "1" if args.spin else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    session = ort.InferenceSession(
        str(args.model / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    for _ in range(5):
        session.run(["y"], {"x": x})
    latencies = []
    cpu0, end = time.process_time(), time.perf_counter() + args.seconds
    while (now := time.perf_counter()) < end:
        session.run(["y"], {"x": x})
        latencies.append(time.perf_counter() - now)
    cpu = time.process_time() - cpu0
    print(
        json.dumps(
            {
                "threads": threads,
                "budget": budget.cpus,
                "source": budget.source,
                "requests": len(latencies),
                "throughput": len(latencies) / args.seconds,
                "p50_ms": float(np.percentile(latencies, 50)) * 1e3,
                "p99_ms": float(np.percentile(latencies, 99)) * 1e3,
                "cpu_ms_per_request": cpu / len(latencies) * 1e3,
            }
        )
    )


def run(
    model: Path, folder: Path | None, threads: int, spin: bool, seconds: float
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", "--model", str(model)]
    command += ["--threads", str(threads), "--seconds", str(seconds)] + (["--spin"] if spin else [])
    if folder is None:
        command = ["taskset", "-c", "0", *command]

    def enter() -> None:  # in the child, before exec: into the cgroup
        if folder is not None:
            (folder / "cgroup.procs").write_text(str(os.getpid()))

    before = throttling(folder)
    out = subprocess.run(command, preexec_fn=enter, capture_output=True, text=True, check=True)
    after = throttling(folder)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if folder is not None:
        periods = after["periods"] - before["periods"]
        result["throttled_pct"] = 100 * (after["throttled"] - before["throttled"]) / max(periods, 1)
        result["throttled_s"] = after["seconds"] - before["seconds"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpus", type=float, default=1.0, help="the quota, in CPUs")
    parser.add_argument("--seconds", type=float, default=6.0, help="per run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--spin", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from onnx_server import export_model

    print(f"$ {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"onnxruntime {__import__('onnxruntime').__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        export_model("cnn", Path(tmp))
        with quota(args.cpus) as (how, folder):
            print(
                f"quota: {args.cpus:g} CPUs via {how}; CNN 3x32x32, batch 1, "
                f"{args.seconds:g} s a run"
            )
            rows = []
            for spin in (True, False):
                for label, threads in (("default", 0), ("budget", -1)):
                    result = run(Path(tmp), folder, threads, spin, args.seconds)
                    rows.append((label, spin, result))
    print(f"budget read inside: {rows[1][2]['budget']} CPUs ({rows[1][2]['source']})")
    print(
        "| threads | spinning | intra-op | req/s | p50 ms | p99 ms | CPU ms/req "
        "| throttled periods |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, spin, r in rows:
        throttled = f"{r['throttled_pct']:.0f}%" if "throttled_pct" in r else "n/a"
        print(
            f"| {label} | {'on' if spin else 'off'} | {r['threads'] or 'ORT default'} "
            f"| {r['throughput']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['cpu_ms_per_request']:.2f} | {throttled} |"
        )
    for index, spin in ((0, "on"), (2, "off")):
        default, budget = rows[index][2], rows[index + 1][2]
        print(
            f"spinning {spin}: budget/default throughput "
            f"{budget['throughput'] / default['throughput']:.2f}x, "
            f"p99 {budget['p99_ms'] / default['p99_ms']:.2f}x"
        )


if __name__ == "__main__":
    main()
