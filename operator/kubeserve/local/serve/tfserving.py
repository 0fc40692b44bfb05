"""runtime tfserving: `tensorflow_model_server` as a child process when it is installed.

It is not installable with pip or apt (TF Serving ships as the tensorflow/serving image), so
without it we say how to run the official image on the same model directory. The monitoring
and batching files are the ones the cluster mounts (`runtimes.tfserving.TFServing`).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp

from ...api import ModelDeployment
from ...cpu import read_budget
from ...runtimes.base import BuildContext
from ...runtimes.tfserving import (
    BATCHING_FILE,
    MONITORING_FILE,
    REST_PORT,
    TFServing,
    thread_args,
    thread_settings,
)
from ..errors import LocalError
from . import announce, binaries
from .children import Child, serve_until_stopped, wait_until_ready
from .net import free_port, get_json, is_free, url_host
from .options import LocalOptions

BINARY = "tensorflow_model_server"
# The official image our images/tfserving builds on (its ARG TFSERVING_VERSION; a test keeps
# the two in step).
OFFICIAL_IMAGE = "tensorflow/serving:2.18.0"


def check_installed(md: ModelDeployment, model_dir: str, port: int) -> str:
    """The binary's path, or a LocalError that says how to run the official image instead."""
    binary = binaries.find(BINARY)
    if binary is None:
        raise LocalError(
            f"runtime tfserving needs {BINARY}, which is not installed (TF Serving has no pip "
            f"or apt package; it ships as the official image). Run the official image instead: "
            f"{docker_command(md, model_dir, port or 8080)}"
        )
    return binary


def docker_command(md: ModelDeployment, model_dir: str, port: int) -> str:
    name = md.model_name
    return (
        f"docker run --rm -p 127.0.0.1:{port}:{REST_PORT} -v {model_dir}:/models/{name}:ro "
        f"-e MODEL_NAME={name} {OFFICIAL_IMAGE}"
    )


def check_layout(model_dir: Path) -> None:
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    if not any((p / "saved_model.pb").is_file() for p in versions):
        raise LocalError(
            f"spec.model.uri: {model_dir} has no <version>/saved_model.pb (TF Serving's layout; "
            "make it with `kubeserve package MODEL --format savedmodel --name NAME -o DIR` and "
            "point the URI at DIR/NAME)"
        )


async def run(
    md: ModelDeployment, model_dir: Path, opts: LocalOptions, stop: asyncio.Event
) -> None:
    binary = check_installed(md, str(model_dir), opts.port)
    check_layout(model_dir)
    if opts.host not in ("0.0.0.0", "::"):
        # TF Serving hard-codes 0.0.0.0 (tensorflow/serving#1969): say so rather than pretend.
        print(
            f"warning: {BINARY} cannot bind one address; it listens on all interfaces, not "
            f"only {opts.host}",
            flush=True,
        )
    port = opts.port or free_port()
    grpc = free_port()
    if not is_free(port, "0.0.0.0"):
        raise LocalError(f"cannot listen on port {port}: the port is in use")
    work = opts.work_dir / "tfserving"
    work.mkdir(parents=True)
    ctx = BuildContext(image="", gpu=md.spec.gpu is not None, image_pull_policy="IfNotPresent")
    files = TFServing().config_files(md, ctx)
    for name, text in files.items():
        (work / name).write_text(text)
    command = [
        binary,
        f"--port={grpc}",
        f"--rest_api_port={port}",
        f"--model_name={md.model_name}",
        f"--model_base_path={model_dir}",
        f"--monitoring_config_file={work / MONITORING_FILE}",
    ]
    if BATCHING_FILE in files:
        command += ["--enable_batching=true", f"--batching_parameters_file={work / BATCHING_FILE}"]
    if md.spec.tfserving and md.spec.tfserving.xla:
        command.append("--xla_cpu_compilation_enabled=true")  # as the cluster's args
    # This machine's CPU budget, as the cluster's CPU limit (kubeserve.cpu).
    command += thread_args(thread_settings(md, read_budget().cpus))
    child = Child(
        BINARY,
        command,
        env=dict(os.environ),
        log_path=None if opts.verbose else work / "tfserving.log",
    )
    await child.start()
    try:
        base = f"http://{url_host(opts.host)}:{port}"
        status_url = f"{base}/v1/models/{md.model_name}"
        async with aiohttp.ClientSession() as session:

            async def available() -> bool:
                body = await get_json(session, status_url)
                states = body.get("model_version_status", []) if isinstance(body, dict) else []
                return any(state.get("state") == "AVAILABLE" for state in states)

            if not await wait_until_ready(
                child, available, timeout_s=opts.ready_timeout_s, stop=stop
            ):
                return
        announce.serving(
            md,
            status_url,
            f'predict: POST {status_url}:predict  body {{"instances": [...]}}',
            f"metrics: {base}/monitoring/prometheus/metrics",
            opts=opts,
        )
        await serve_until_stopped(child, stop)
        announce.stopping(md, opts)
    finally:
        await child.stop()
