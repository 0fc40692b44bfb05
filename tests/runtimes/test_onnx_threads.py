"""Our ONNX server sizes ONNX Runtime's intra-op pool to its CPU budget (issue 16).

Real server processes (python -m kubeserve.dataplane.onnx_server), each pointed at a fake
cgroup v2 cpu.max file through $KUBESERVE_CPU_MAX. What each test checks is what the server
reports, and what the process really runs:
- the gauge kubeserve_onnxruntime_intra_op_threads, read back from the ORT session's options;
- the log line naming the source;
- the process's thread count (/proc/PID/task): ORT's pool holds intra-op threads - 1 (the
  calling thread is the last), so two servers that differ only in the count differ by exactly
  that many threads.
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # before anything imports onnxruntime

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import onnx
import pytest
from onnx import TensorProto, helper
from prometheus_client.parser import text_string_to_metric_families

from kubeserve.cpu import CPU_MAX_ENV

MODEL = "mlp"
WAIT_S = 30.0  # bound of each wait; a healthy start takes 1-3 s
GAUGE = "kubeserve_onnxruntime_intra_op_threads"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mlp")
    weights = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], [0.5] * 12)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    return folder


@dataclass
class Started:
    gauge: float
    log: str
    threads: int


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def start(
    model_dir: Path, http: aiohttp.ClientSession, cpu_max: Path, *flags: str
) -> Started:
    """Start a server with $KUBESERVE_CPU_MAX=cpu_max, read what it reports, stop it."""
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kubeserve.dataplane.onnx_server",
        "--model-dir",
        str(model_dir),
        "--model-name",
        MODEL,
        "--port",
        str(port),
        *flags,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, CPU_MAX_ENV: str(cpu_max)},
    )
    lines: list[bytes] = []
    try:

        async def until_ready() -> None:
            assert proc.stderr is not None
            while line := await proc.stderr.readline():
                lines.append(line)
                if b"is ready at" in line:
                    return
            raise AssertionError(b"".join(lines).decode())

        await asyncio.wait_for(until_ready(), WAIT_S)
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
        threads = len(os.listdir(f"/proc/{proc.pid}/task"))
    finally:
        proc.kill()
        await proc.wait()
    (gauge,) = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == GAUGE and sample.labels == {"model": MODEL}
    ]
    log = b"".join(lines).decode()
    return Started(gauge=gauge, log=log, threads=threads)


async def test_threads_follow_the_cpu_limit_the_flag_wins_and_no_limit_is_the_default(
    model_dir: Path, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    one_cpu = tmp_path / "one"
    one_cpu.write_text("100000 100000\n")  # a 1-CPU limit (1000m)
    three_cpus = tmp_path / "three"
    three_cpus.write_text("250000 100000\n")  # 2.5 CPUs: 3 threads
    no_limit = tmp_path / "max"
    no_limit.write_text("max 100000\n")

    limited = await start(model_dir, http, one_cpu)
    assert limited.gauge == 1
    assert f"intra-op threads: 1, from {CPU_MAX_ENV}={one_cpu}" in limited.log

    # More threads than this machine's cores would be bounded by its CPU affinity; an
    # explicit flag is not.
    flagged = await start(model_dir, http, one_cpu, "--intra-op-threads", "3")
    assert flagged.gauge == 3
    assert "intra-op threads: 3 (--intra-op-threads)" in flagged.log
    assert flagged.threads - limited.threads == 2, "ORT's pool: intra-op threads - 1"

    cores = len(os.sched_getaffinity(0))
    derived = await start(model_dir, http, three_cpus)
    assert derived.gauge == min(3, cores)

    unlimited = await start(model_dir, http, no_limit)
    if cores < (os.cpu_count() or cores):  # a cpuset or taskset: its size is the budget
        assert unlimited.gauge == cores
    else:
        assert unlimited.gauge == 0
        assert "intra-op threads: ONNX Runtime's default, one per core" in unlimited.log
