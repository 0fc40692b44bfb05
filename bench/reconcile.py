"""Benchmark: the operator against a plain client making the same writes, on a real control plane.

Every run gets a fresh etcd + kube-apiserver + kube-controller-manager (tests/cluster/envtest.py,
binaries from $KUBEBUILDER_ASSETS; `make assets` unpacks them), the ModelDeployment CRD, and N
ModelDeployments (onnxruntime, two children each: a Deployment and a Service). The controller
manager turns each Deployment into a ReplicaSet and a pod (Pending: there are no nodes), so the
operator sees the Deployment status traffic a cluster produces.

Scenarios, each timed for the operator (`kubeserve run -A` as a process) and for the floor, a
plain async client doing the same writes with no framework (server-side apply of each child,
then one status patch, 8 in flight):

- cold: the N ModelDeployments exist; the operator starts (as after a restart or upgrade).
  Operator: process start -> every one has status.observedGeneration. Plain: list, then write.
- live: N are created while it runs. Plain: each create is followed by its writes, 8 in
  flight; lag: last create -> last status written. Operator: the creates come at the pace
  the plain run kept; lag: last create -> last reconciled.

The controller manager gets a higher API rate limit than its default 20/s (`--controller-qps`),
so that it makes every Deployment's ReplicaSet and pod within the run: at 20/s, 3,000 take
over 10 minutes, and their progress deadline (600 s) would start a second wave of updates.

For the operator it also reports peak RSS, CPU once settled (over `--idle` seconds, once no
Deployment or ModelDeployment has changed for `--quiet` seconds; the operator's resync is set
beyond the run, so it is not due), log lines, and per model: CPU ms, RSS bytes and API
requests (the operator's kubeserve_api_requests_total).

    .venv/bin/python bench/reconcile.py --counts 1000 3000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "cluster"))

from envtest import ControlPlane, find_assets, free_port  # noqa: E402

from kubeserve import api  # noqa: E402
from kubeserve.api import ModelDeployment  # noqa: E402
from kubeserve.config import OperatorConfig  # noqa: E402
from kubeserve.crd import crd  # noqa: E402
from kubeserve.render import render  # noqa: E402
from kubeserve.resources.kinds import kind_of  # noqa: E402

NAMESPACE = "bench"
IN_FLIGHT = 8
TIMEOUT = 900.0
PROFILE: Path | None = None
CONTROLLER_QPS = 0  # set by --controller-qps


def md_body(index: int) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": f"model-{index}", "namespace": NAMESPACE},
        "spec": {"runtime": "onnxruntime", "model": {"uri": f"s3://models/m{index}/model.onnx"}},
    }


def collection(api_version: str, plural: str, namespace: str | None = NAMESPACE) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"


MDS = collection(api.API_VERSION, api.PLURAL)


class Api:
    """A minimal aiohttp client with the control plane's admin certificate."""

    def __init__(self, plane: ControlPlane) -> None:
        context = ssl.create_default_context(cafile=str(plane.ca.pair.cert))
        context.load_cert_chain(str(plane.admin.cert), str(plane.admin.key))
        self.base = plane.url
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=64),
            timeout=aiohttp.ClientTimeout(total=120),
        )

    async def close(self) -> None:
        await self.session.close()

    async def call(
        self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        async with self.session.request(
            method, self.base + path, params=params,
            data=None if body is None else json.dumps(body),
            headers={"Content-Type": content_type},
        ) as response:  # fmt: skip
            text = await response.text()
            if response.status >= 400:
                raise RuntimeError(f"{method} {path}: {response.status} {text[:300]}")
            return dict(json.loads(text))

    async def watch(self, path: str, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        """The objects of the watch events on `path` after `resource_version`."""
        params = {"watch": "1", "resourceVersion": resource_version}
        async with self.session.get(
            self.base + path, params=params, timeout=aiohttp.ClientTimeout(total=None)
        ) as stream:
            async for line in stream.content:
                yield json.loads(line)["object"]

    async def create_md(self, index: int) -> None:
        await self.call("POST", MDS, md_body(index))

    async def write_like_the_operator(self, md: dict[str, Any], cfg: OperatorConfig) -> None:
        for child in render(ModelDeployment.parse(md), cfg):
            kind = kind_of(child)
            path = f"{collection(kind.api_version, kind.plural)}/{child['metadata']['name']}"
            await self.call(
                "PATCH", path, child, content_type="application/apply-patch+yaml",
                params={"fieldManager": "plain", "force": "true"},
            )  # fmt: skip
        await self.call(
            "PATCH", f"{MDS}/{md['metadata']['name']}/status",
            {"status": {"observedGeneration": md["metadata"]["generation"]}},
            content_type="application/merge-patch+json",
        )  # fmt: skip


async def bounded(count: int, each: Callable[[int], Awaitable[None]]) -> None:
    limit = asyncio.Semaphore(IN_FLIGHT)

    async def one(index: int) -> None:
        async with limit:
            await each(index)

    await asyncio.gather(*(one(i) for i in range(count)))


class Quiet:
    """Watches Deployments and ModelDeployments: the cluster has settled once neither changes."""

    def __init__(self, client: Api) -> None:
        self.client = client
        self.last = time.monotonic()
        self.tasks = [
            asyncio.create_task(self._watch(collection("apps/v1", "deployments"))),
            asyncio.create_task(self._watch(MDS)),
        ]

    async def _watch(self, path: str) -> None:
        listed = await self.client.call("GET", path, params={"limit": "1"})
        async for _obj in self.client.watch(path, listed["metadata"]["resourceVersion"]):
            self.last = time.monotonic()

    async def settled(self, quiet: float) -> float:
        """Waits until nothing changed for `quiet` seconds; returns when that began."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() - self.last < quiet:
            if time.monotonic() > deadline:
                raise SystemExit(f"the cluster did not settle in {TIMEOUT} s")
            await asyncio.sleep(0.5)
        for task in self.tasks:
            task.cancel()
        return self.last


class Reconciled:
    """Watches ModelDeployments; done once `count` have observedGeneration == generation."""

    def __init__(self, client: Api, count: int) -> None:
        self.client, self.count = client, count
        self.done: set[str] = set()
        self.last = 0.0
        self.complete = asyncio.Event()
        self.task = asyncio.create_task(self._watch())

    def _see(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        current = (obj.get("status") or {}).get("observedGeneration") == meta.get("generation")
        if current and meta["name"] not in self.done:
            self.done.add(meta["name"])
            self.last = time.monotonic()
        if len(self.done) >= self.count:
            self.complete.set()

    async def _watch(self) -> None:
        listed = await self.client.call("GET", MDS)
        for obj in listed["items"]:
            self._see(obj)
        async for obj in self.client.watch(MDS, listed["metadata"]["resourceVersion"]):
            self._see(obj)

    async def wait(self) -> float:
        """Until all are reconciled; returns the time of the last one (monotonic)."""
        try:
            await asyncio.wait_for(self.complete.wait(), TIMEOUT)
        except TimeoutError:
            missing = self.count - len(self.done)
            raise SystemExit(f"{missing} not reconciled in {TIMEOUT} s") from None
        finally:
            self.task.cancel()
        return self.last


async def fresh_cluster(workdir: Path) -> tuple[ControlPlane, Api]:
    assets = find_assets()
    if isinstance(assets, str):
        raise SystemExit(assets)
    plane = ControlPlane(assets, workdir, controller_qps=CONTROLLER_QPS)
    await asyncio.to_thread(plane.start)
    client = Api(plane)
    await client.call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd())
    for _ in range(300):
        try:
            await client.call("GET", MDS)
            break
        except RuntimeError:
            await asyncio.sleep(0.1)
    await client.call("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    return plane, client


class OperatorProcess:
    def __init__(self, plane: ControlPlane, workdir: Path) -> None:
        self.health, self.metrics_port = free_port(), free_port()
        self.log = workdir / "operator.log"
        env = {**os.environ, "KUBECONFIG": str(plane.admin_kubeconfig)}
        env["ORT_DISABLE_TELEMETRY"] = "1"
        env["KUBESERVE_RESYNC_SECONDS"] = str(int(TIMEOUT * 4))  # not due during a run
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "kubeserve", "run", "-A", "--log-format=text",
             f"--liveness=http://127.0.0.1:{self.health}/healthz",
             f"--metrics-port={self.metrics_port}"],
            env=env, stdout=subprocess.DEVNULL, stderr=self.log.open("w"),
        )  # fmt: skip
        self.ps = psutil.Process(self.popen.pid)
        self.peak_rss = 0
        self.sampler = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            self.peak_rss = max(self.peak_rss, self.ps.memory_info().rss)
            await asyncio.sleep(0.2)

    def cpu(self) -> float:
        return sum(self.ps.cpu_times()[:2])

    async def healthy(self) -> None:
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    raise SystemExit(f"the operator exited:\n{self.log.read_text()[-2000:]}")
                try:
                    async with session.get(f"http://127.0.0.1:{self.health}/healthz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise SystemExit("the operator did not become healthy in 60 s")

    async def api_requests(self) -> dict[str, float]:
        """The operator's requests by verb, from its kubeserve_api_requests_total."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as r,
        ):
            text = await r.text()
        pattern = r'^kubeserve_api_requests_total\{[^}]*verb="(\w+)"[^}]*\} ([0-9.e+]+)$'
        verbs: dict[str, float] = {}
        for verb, value in re.findall(pattern, text, re.M):
            verbs[verb] = verbs.get(verb, 0.0) + float(value)
        reconciles = re.findall(
            r'^kubeserve_reconciles_total\{outcome="ok"\} ([0-9.e+]+)$', text, re.M
        )
        self.reconciles = float(reconciles[0]) if reconciles else 0.0
        return verbs

    def profile(self, out: Path, seconds: float) -> subprocess.Popen[bytes] | None:
        """py-spy's collapsed stacks of the operator, when --profile asks for them."""
        if PROFILE is None:
            return None
        return subprocess.Popen(
            ["py-spy", "record", "--pid", str(self.popen.pid), "--format", "raw", "--rate", "50",
             "--duration", str(int(seconds)), "--output", str(PROFILE / out), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    async def settled(self, quiet: Quiet, seconds: float, idle: float) -> dict[str, float]:
        """CPU over `idle` seconds once the cluster settled, and what it cost until then."""
        since = await quiet.settled(seconds)
        before = self.cpu()
        self.profile(Path("idle.txt"), idle)
        await asyncio.sleep(idle)
        idle_cpu = (self.cpu() - before) / idle
        # A scrape of its /metrics costs the operator CPU too: taken after the idle window,
        # and reported on its own (Prometheus scrapes every 30 s by default).
        before = self.cpu()
        requests = await self.api_requests()
        return {
            "idle_cpu": idle_cpu,
            "scrape_cpu": self.cpu() - before,
            "rss": self.ps.memory_info().rss,
            "requests": sum(requests.values()),
            "reconciles": self.reconciles,
            **{f"requests_{verb}": value for verb, value in requests.items()},
            "log_lines": len(self.log.read_text().splitlines()),
            "settled": since - self.started,
        }

    def stop(self) -> None:
        self.sampler.cancel()
        self.popen.terminate()
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()


async def plain_cold(count: int, workdir: Path) -> dict[str, float]:
    plane, client = await fresh_cluster(workdir)
    cfg = OperatorConfig()
    try:
        await bounded(count, client.create_md)
        started = time.monotonic()
        items = (await client.call("GET", MDS))["items"]
        await bounded(count, lambda i: client.write_like_the_operator(items[i], cfg))
        return {"seconds": time.monotonic() - started}
    finally:
        await client.close()
        plane.stop()


async def plain_live(count: int, workdir: Path) -> dict[str, float]:
    plane, client = await fresh_cluster(workdir)
    cfg = OperatorConfig()
    last_create = last_write = 0.0
    started = time.monotonic()

    async def create_and_write(index: int) -> None:
        nonlocal last_create, last_write
        md = await client.call("POST", MDS, md_body(index))
        last_create = max(last_create, time.monotonic())
        await client.write_like_the_operator(md, cfg)
        last_write = max(last_write, time.monotonic())

    try:
        await bounded(count, create_and_write)
        return {"lag": last_write - last_create, "rate": count / (last_create - started)}
    finally:
        await client.close()
        plane.stop()


async def operator_cold(count: int, workdir: Path, quiet: float, idle: float) -> dict[str, float]:
    plane, client = await fresh_cluster(workdir)
    operator = None
    try:
        await bounded(count, client.create_md)
        watcher = Reconciled(client, count)
        activity = Quiet(client)
        operator = OperatorProcess(plane, workdir)
        await asyncio.sleep(1)  # py-spy needs the interpreter up
        operator.profile(Path(f"cold-{count}.txt"), 600)
        last = await watcher.wait()
        reconcile_cpu = operator.cpu()
        result = {"seconds": last - operator.started, "cpu_s": reconcile_cpu}
        result.update(await operator.settled(activity, quiet, idle))
        result["peak_rss"] = operator.peak_rss
        return result
    finally:
        if operator is not None:
            operator.stop()
        await client.close()
        plane.stop()


async def operator_live(count: int, rate: float, workdir: Path, quiet: float) -> dict[str, float]:
    plane, client = await fresh_cluster(workdir)
    operator = OperatorProcess(plane, workdir)
    try:
        await operator.healthy()
        await asyncio.sleep(2)  # its watches are open once /healthz answers; let it go quiet
        baseline_rss = operator.ps.memory_info().rss
        watcher = Reconciled(client, count)
        activity = Quiet(client)
        last_create = 0.0
        started = time.monotonic()

        async def create(index: int) -> None:
            nonlocal last_create
            await asyncio.sleep(max(0.0, started + index / rate - time.monotonic()))
            await client.create_md(index)
            last_create = max(last_create, time.monotonic())

        await bounded(count, create)
        last = await watcher.wait()
        await activity.settled(quiet)
        rss = operator.ps.memory_info().rss
        return {"lag": last - last_create, "baseline_rss": baseline_rss, "rss": rss}
    finally:
        operator.stop()
        await client.close()
        plane.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1000])
    parser.add_argument("--quiet", type=float, default=10.0, help="seconds without a change")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds idle CPU is taken over")
    parser.add_argument("--scenarios", nargs="+", default=["cold", "live"])
    parser.add_argument("--keep", type=Path, help="keep logs here (default: a temporary folder)")
    parser.add_argument("--profile", type=Path, help="write py-spy stacks of the operator here")
    parser.add_argument("--controller-qps", type=int, default=200)
    parser.add_argument(
        "--live-rate", type=float, help="creates/s in the live scenario (default: the plain pace)"
    )
    args = parser.parse_args()
    global PROFILE, CONTROLLER_QPS
    PROFILE, CONTROLLER_QPS = args.profile, args.controller_qps
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    for count in args.counts:
        with tempfile.TemporaryDirectory(prefix="kubeserve-bench-") as tmp:
            work = args.keep / str(count) if args.keep else Path(tmp)
            for name in ("plain-cold", "operator-cold", "plain-live", "operator-live"):
                (work / name).mkdir(parents=True)
            if "cold" in args.scenarios:
                plain = await plain_cold(count, work / "plain-cold")
                op = await operator_cold(count, work / "operator-cold", args.quiet, args.idle)
                report_cold(count, plain, op, args)
            if "live" in args.scenarios:
                plain = await plain_live(count, work / "plain-live")
                rate = args.live_rate or plain["rate"]
                op = await operator_live(count, rate, work / "operator-live", args.quiet)
                print(
                    f"N={count} live, plain {plain['rate']:.0f} creates/s, operator {rate:.0f}/s: "
                    "last create -> last "
                    "reconciled: operator "
                    f"{op['lag']:.2f} s, plain {plain['lag']:.2f} s, behind by "
                    f"{op['lag'] - plain['lag']:.2f} s\n  operator RSS with none "
                    f"{op['baseline_rss'] / 2**20:.0f} MB, with {count} settled "
                    f"{op['rss'] / 2**20:.0f} MB: "
                    f"{(op['rss'] - op['baseline_rss']) / count / 1024:.1f} KiB per model",
                    flush=True,
                )


def report_cold(count: int, plain: dict[str, float], op: dict[str, float], args: Any) -> None:
    print(
        f"N={count} cold: operator {op['seconds']:.2f} s, plain {plain['seconds']:.2f} s, "
        f"ratio {op['seconds'] / plain['seconds']:.2f}x\n"
        f"  peak RSS {op['peak_rss'] / 2**20:.0f} MB; settled {op['settled']:.0f} s after start; "
        f"CPU over the next {args.idle:.0f} s: {100 * op['idle_cpu']:.2f} % of a core; "
        f"log lines {op['log_lines']:.0f}; one /metrics scrape: {1000 * op['scrape_cpu']:.0f} "
        "CPU ms\n"
        f"  per model: {1000 * op['cpu_s'] / count:.1f} CPU ms to reconcile, "
        f"{op['reconciles'] / count:.2f} reconciles, {op['requests'] / count:.2f} API requests ("
        + ", ".join(
            f"{key.removeprefix('requests_')} {value / count:.2f}"
            for key, value in op.items()
            if key.startswith("requests_")
        )
        + ")",
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main())
