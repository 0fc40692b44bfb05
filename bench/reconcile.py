"""Benchmark: the operator reconciling N ModelDeployments vs a plain client doing the same writes.

Both talk to the same in-process API endpoint: kmock with create-on-apply and direct lookups,
the emulator the integration tests use (tests/integration/kmock_harness.py). The operator
runs as a real `kubeserve run` subprocess, so its peak RSS and idle CPU are its own. The
plain client renders the same children and applies them, then writes the same status, with
bounded concurrency. Prints each run, then the medians (peak RSS: the largest), the ratios
and the command.

    .venv/bin/python bench/reconcile.py --counts 100 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from kmock._internal import apps  # noqa: E402
from kmock_harness import MD_RESOURCE, ApplyingEmulator  # noqa: E402

from kubeserve import api  # noqa: E402
from kubeserve.api import ModelDeployment  # noqa: E402
from kubeserve.config import OperatorConfig  # noqa: E402
from kubeserve.render import render  # noqa: E402
from kubeserve.resources.kinds import kind_of  # noqa: E402

NAMESPACE = "bench"
CONCURRENCY = 64


def md_body(index: int) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {
            "name": f"model-{index}",
            "namespace": NAMESPACE,
            "uid": str(uuid.uuid4()),
            "resourceVersion": "1",
            "generation": 1,
        },
        "spec": {"runtime": "torchserve", "model": {"uri": f"s3://models/m{index}/"}},
    }


def collection(api_version: str, plural: str) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{NAMESPACE}/{plural}"


async def new_server() -> tuple[Any, Any]:
    kmock = ApplyingEmulator()
    await kmock.__aenter__()
    server = apps.Server(kmock)
    await server.__aenter__()
    kmock.resources.load_bundled()
    kmock.resources[MD_RESOURCE] = kmock.ResourceInfo(
        kind=api.KIND,
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "delete"},
        subresources={"status"},
    )
    return kmock, server


async def create_all(
    session: aiohttp.ClientSession, base: str, bodies: list[dict[str, Any]]
) -> None:
    limit = asyncio.Semaphore(CONCURRENCY)

    async def create(body: dict[str, Any]) -> None:
        async with (
            limit,
            session.post(base + collection(api.API_VERSION, api.PLURAL), json=body) as r,
        ):
            assert r.status < 400, await r.text()

    await asyncio.gather(*(create(b) for b in bodies))


def reconciled(kmock: Any, count: int) -> int:
    resource = kmock.resource(MD_RESOURCE)
    done = 0
    for (res, _ns, _name), obj in list(kmock.objects.items()):
        if (
            res == resource
            and not obj.deleted
            and (obj.raw.get("status") or {}).get("observedGeneration")
        ):
            done += 1
    return done


async def wait_reconciled(kmock: Any, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while reconciled(kmock, count) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {reconciled(kmock, count)}/{count} reconciled in {timeout}s")
        await asyncio.sleep(0.1)


async def run_operator(count: int, idle_seconds: float) -> dict[str, float]:
    kmock, server = await new_server()
    base = str(kmock.url).rstrip("/")
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "bench",
                    "clusters": [{"name": "bench", "cluster": {"server": base}}],
                    "users": [{"name": "bench", "user": {"token": "bench"}}],
                    "contexts": [
                        {"name": "bench", "context": {"cluster": "bench", "user": "bench"}}
                    ],
                }
            )
        )
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "ORT_DISABLE_TELEMETRY": "1"}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kubeserve",
                "run",
                "-A",
                "--liveness",
                "",
                "--metrics-port",
                "0",
                "--log-level",
                "INFO" if LOG_FILE else "WARNING",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(LOG_FILE, "w") if LOG_FILE else subprocess.DEVNULL,  # noqa: SIM115
        )
        ps = psutil.Process(proc.pid)
        peak = 0
        try:
            async with aiohttp.ClientSession() as session:
                # Wait until the operator is watching (its first LIST of ModelDeployments).
                deadline = time.monotonic() + 60
                while not any(r.method == "GET" and api.PLURAL in str(r.url) for r in kmock):
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit("operator did not start")
                    await asyncio.sleep(0.1)
                started = time.monotonic()
                await create_all(session, base, [md_body(i) for i in range(count)])
                sampler = asyncio.create_task(sample_rss(ps))
                await wait_reconciled(kmock, count, timeout=1800)
                elapsed = time.monotonic() - started
                cpu_before = sum(ps.cpu_times()[:2])
                await asyncio.sleep(idle_seconds)
                idle_cpu = (sum(ps.cpu_times()[:2]) - cpu_before) / idle_seconds
                sampler.cancel()
                peak = max(peak, ps.memory_info().rss)
                peak = max(peak, RSS_PEAK[0])
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            await server.__aexit__(None, None, None)
            await kmock.__aexit__(None, None, None)
    return {"seconds": elapsed, "rss_mb": peak / 2**20, "idle_cpu": idle_cpu}


RSS_PEAK = [0]
LOG_FILE = os.environ.get("BENCH_OPERATOR_LOG")


async def sample_rss(ps: psutil.Process) -> None:
    while True:
        RSS_PEAK[0] = max(RSS_PEAK[0], ps.memory_info().rss)
        await asyncio.sleep(0.2)


async def run_plain_client(count: int) -> dict[str, float]:
    """The same writes without an operator: apply each rendered child, then the status."""
    kmock, server = await new_server()
    base = str(kmock.url).rstrip("/")
    cfg = OperatorConfig()
    bodies = [md_body(i) for i in range(count)]
    limit = asyncio.Semaphore(CONCURRENCY)
    try:
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            await create_all(session, base, bodies)

            async def write(body: dict[str, Any]) -> None:
                async with limit:
                    for child in render(ModelDeployment.parse(body), cfg):
                        kind = kind_of(child)
                        name = child["metadata"]["name"]
                        url = f"{base}{collection(kind.api_version, kind.plural)}/{name}"
                        async with session.patch(
                            url,
                            json=child,
                            params={"fieldManager": "plain", "force": "true"},
                            headers={"Content-Type": "application/apply-patch+yaml"},
                        ) as r:
                            assert r.status < 400, await r.text()
                    md_path = (
                        f"{collection(api.API_VERSION, api.PLURAL)}/{body['metadata']['name']}"
                    )
                    url = f"{base}{md_path}/status"
                    async with session.patch(
                        url,
                        json={"status": {"observedGeneration": 1}},
                        headers={"Content-Type": "application/merge-patch+json"},
                    ) as r:
                        assert r.status < 400, await r.text()

            await asyncio.gather(*(write(b) for b in bodies))
            await wait_reconciled(kmock, count, timeout=1800)
            elapsed = time.monotonic() - started
    finally:
        await server.__aexit__(None, None, None)
        await kmock.__aexit__(None, None, None)
    return {"seconds": elapsed}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per count; medians shown")
    args = parser.parse_args()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    columns = ("N", "run", "operator s", "plain s", "ratio", "peak RSS MB", "idle CPU %")
    widths = (6, 6, 11, 9, 7, 12, 11)
    print(" ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True)))
    for count in args.counts:
        runs = []
        for attempt in range(args.repeat):
            plain = await run_plain_client(count)
            RSS_PEAK[0] = 0
            operator = await run_operator(count, args.idle_seconds)
            runs.append((operator["seconds"], plain["seconds"], operator))
            row(count, str(attempt + 1), operator["seconds"], plain["seconds"], operator)
        operator_s = statistics.median(r[0] for r in runs)
        plain_s = statistics.median(r[1] for r in runs)
        worst = {
            "rss_mb": max(r[2]["rss_mb"] for r in runs),
            "idle_cpu": statistics.median(r[2]["idle_cpu"] for r in runs),
        }
        row(count, "median", operator_s, plain_s, worst)


def row(count: int, run: str, operator_s: float, plain_s: float, op: dict[str, float]) -> None:
    print(
        f"{count:>6} {run:>6} {operator_s:>11.2f} {plain_s:>9.2f} {operator_s / plain_s:>7.2f} "
        f"{op['rss_mb']:>12.1f} {100 * op['idle_cpu']:>11.2f}",
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main())
