"""runtime torchserve: the `torchserve` binary as a child process, configured by the same
`runtimes.torchserve.config_properties` the cluster mounts, with local ports and paths.

As in the cluster: token auth off, management API on 127.0.0.1 only, model API off. Java and
TorchServe write temp files, logs and metrics under a private temp dir (TEMP, TMPDIR,
LOG_LOCATION, METRICS_LOCATION), never in /tmp or the current directory.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp

from ...api import ModelDeployment
from ...cpu import read_budget, torch_env
from ...runtimes.torchserve import (
    config_properties,
    has_ready_worker,
    model_status_url,
    thread_settings,
)
from ..errors import LocalError
from . import announce, binaries
from .children import Child, ChildFailed, serve_until_stopped, wait_until_ready
from .net import free_port, get_json, is_free, url_host
from .options import LocalOptions

# config_properties puts TorchServe's (unused, loopback-only) gRPC ports at management+1000/1001.
GRPC_OFFSETS = (1000, 1001)
PID_FILE = ".model_server.pid"  # where the torchserve wrapper records Java's PID, in $TMPDIR
STOP_GRACE_S = 30.0
LOAD_FAILED = "Load model failed"  # TorchServe's log line when a worker dies loading the model


async def run(
    md: ModelDeployment, model_dir: Path, opts: LocalOptions, stop: asyncio.Event
) -> None:
    binary = binaries.find("torchserve")
    if binary is None:
        raise LocalError(
            "runtime torchserve needs the torchserve binary: pip install torchserve==0.12.0 "
            "torch-model-archiver==0.12.0 (and Java 17), or serve an ONNX export with runtime "
            "onnxruntime"
        )
    if binaries.find_java() is None:
        raise LocalError(
            "runtime torchserve needs Java 11 or later (no java on PATH or in JAVA_HOME)"
        )
    mar = model_dir / f"{md.model_name}.mar"
    if not mar.is_file():
        raise LocalError(
            f"spec.model.uri: {model_dir} has no {mar.name} (TorchServe's model store; make it "
            f"with `kubeserve package MODEL --format mar --name {md.model_name} -o DIR`)"
        )
    port = opts.port or free_port(opts.host)
    if not is_free(port, opts.host):
        raise LocalError(f"cannot listen on {opts.host}:{port}: the port is in use")
    management = _management_port()
    metrics = free_port(opts.host)
    work = opts.work_dir / "torchserve"
    temp, logs = work / "tmp", work / "logs"
    temp.mkdir(parents=True)
    logs.mkdir()
    config = work / "config.properties"
    config.write_text(
        config_properties(
            md,
            gpus=md.spec.gpu.count if md.spec.gpu else 0,
            bind=opts.host,
            inference_port=port,
            management_port=management,
            metrics_port=metrics,
            model_store=str(model_dir),
        )
    )
    env = {key: value for key, value in os.environ.items() if key != "TS_CONFIG_FILE"}
    env.update(
        {
            "ORT_DISABLE_TELEMETRY": "1",  # TorchServe's base handler imports onnxruntime
            "TEMP": str(temp),
            "TMPDIR": str(temp),
            "LOG_LOCATION": str(logs),
            "METRICS_LOCATION": str(logs),
        }
    )
    # Threads per worker from this machine's CPU budget, as the cluster's from the CPU limit;
    # a value already in the environment wins.
    for var in torch_env(thread_settings(md, read_budget().cpus)):
        env.setdefault(var["name"], var["value"])
    command = [
        binary,
        "--start",
        "--foreground",
        "--ts-config",
        str(config),
        "--model-store",
        str(model_dir),
        "--disable-token-auth",
        "--ncs",
    ]
    child = Child(
        "torchserve",
        command,
        env=env,
        log_path=None if opts.verbose else work / "torchserve.log",
        noise=("ACCESS_LOG",),
    )  # our own readiness polls
    await child.start()
    try:
        async with aiohttp.ClientSession() as session:
            # The cluster's readiness probe asks the same URL the same question.
            model_url = model_status_url(management, md.model_name)

            async def model_ready() -> bool:
                if any(LOAD_FAILED in line for line in child.tail(200)):
                    # TorchServe retries a dying worker forever; the first failure is enough.
                    raise ChildFailed(
                        child,
                        f"TorchServe could not load {mar.name}: its worker "
                        "died while loading it (see the log lines above)",
                    )
                return has_ready_worker(await get_json(session, model_url))

            if not await wait_until_ready(
                child, model_ready, timeout_s=opts.ready_timeout_s, stop=stop
            ):
                return
        base = f"http://{url_host(opts.host)}:{port}"
        announce.serving(
            md,
            f"{base}/predictions/{md.model_name}",
            f'predict:    POST {base}/predictions/{md.model_name}  body {{"data": [[...]]}}',
            f"metrics:    http://{url_host(opts.host)}:{metrics}/metrics",
            f"management: http://127.0.0.1:{management} (127.0.0.1 only)",
            opts=opts,
        )
        await serve_until_stopped(child, stop)
        announce.stopping(md, opts)
    finally:
        # `torchserve --stop` returns before Java exits: signal Java ourselves, then wait for
        # the wrapper, which exits only once Java has.
        await child.stop(signal_pid=_java_pid(temp), grace_s=STOP_GRACE_S)


def _management_port() -> int:
    for _ in range(50):
        port = free_port()
        if port + max(GRPC_OFFSETS) < 65536 and all(
            is_free(port + offset) for offset in GRPC_OFFSETS
        ):
            return port
    raise LocalError("cannot find free local ports for TorchServe's management and gRPC APIs")


def _java_pid(temp: Path) -> int | None:
    try:
        return int((temp / PID_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
