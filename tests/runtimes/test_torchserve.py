"""TorchServe for real: `kubeserve package --format mar`, then `kubeserve serve` starts the
`torchserve` binary with the config.properties the operator mounts in the cluster
(runtimes.torchserve.config_properties), with local ports. One server for the module: it
takes seconds to start.
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # before anything imports onnxruntime

import contextlib
import io
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_local import (
    TINY_MODEL,
    Served,
    children_of,
    cli_env,
    environ_of,
    error_lines,
    group_processes,
    http,
    listen_addresses,
    max_diff,
    non_loopback_ipv4,
    run_cli,
    serving,
    torch_reference,
    write_md,
)

from kubeserve.api import ModelDeployment
from kubeserve.cli import main
from kubeserve.cpu import CPU_MAX_ENV
from kubeserve.local.serve.binaries import find, find_java
from kubeserve.local.serve.net import free_port
from kubeserve.local.serve.torchserve import PID_FILE, _management_port
from kubeserve.runtimes.base import BuildContext
from kubeserve.runtimes.torchserve import MANAGEMENT_PORT, TorchServe, config_properties

pytestmark = [
    pytest.mark.runtimes,
    pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning"),
    pytest.mark.slow,
    pytest.mark.skipif(
        find("torchserve") is None or find_java() is None,
        reason="torchserve or Java is not installed",
    ),
]

NAME = "tiny"
ROWS = [[0.5, -1.0, 2.0, 0.25], [0.0, 0.0, 0.0, 0.0], [3.0, 1.0, -2.0, 1.5]]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("torchserve")
    # In-process: torch is loaded here anyway for the reference answers.
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(
            [
                "package",
                TINY_MODEL,
                "--input-shape",
                "1,4",
                "--format",
                "mar",
                "--name",
                NAME,
                "-o",
                str(tmp / "store"),
            ]
        )
    assert status == 0, stderr.getvalue()
    return tmp


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[Served]:
    md = write_md(
        store / "md.yaml",
        NAME,
        "torchserve",
        "store",
        batching={"maxBatchSize": 4, "maxDelayMs": 5},
    )
    # Without the variable: `kubeserve serve` must set it for TorchServe itself.
    env = {key: value for key, value in cli_env(store).items() if key != "ORT_DISABLE_TELEMETRY"}
    # A 2-CPU budget, as a pod's cgroup would give (issue 16): each worker gets 2 threads.
    (store / "cpu.max").write_text("200000 100000\n")
    env[CPU_MAX_ENV] = str(store / "cpu.max")
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(variable, None)
    with serving(md, tmp=store, env=env) as served:
        yield served


def test_prediction_matches_torch(server: Served) -> None:
    assert server.url.endswith(f"/predictions/{NAME}")
    for rows in (ROWS[:1], ROWS):
        status, body = http("POST", server.url, {"data": rows})
        assert status == 200, body
        assert max_diff(body["data"], torch_reference(rows)) <= 1e-5


def test_no_token_is_needed(server: Served) -> None:
    # TorchServe 0.12 turns token authorization on by default and answers 400 without one.
    status, body = http("POST", server.url, {"data": ROWS[:1]})
    assert status == 200, body
    status, body = http("GET", f"{server.extra['management']}/models/{NAME}")
    assert status == 200, body
    assert body[0]["modelName"] == NAME


def test_bad_request_gets_400_and_a_reason(server: Served) -> None:
    status, body = http("POST", server.url, {"data": [[1.0, 2.0]]})
    assert status == 400
    assert "expected [N, 4]" in str(body)


def test_management_api_listens_only_on_loopback(server: Served) -> None:
    management_port = int(server.extra["management"].rsplit(":", 1)[1])
    assert listen_addresses(management_port) == {"127.0.0.1"}
    address = non_loopback_ipv4()
    if address is not None:
        with pytest.raises(OSError), socket.create_connection((address, management_port), 2):
            pass
    # The model API (register models from URLs) stays off.
    status, _ = http("POST", f"{server.extra['management']}/models?url=http://example.com/x.mar")
    assert status >= 400


def test_inference_and_metrics_listen_where_asked(server: Served) -> None:
    inference_port = int(server.base.rsplit(":", 1)[1])
    assert listen_addresses(inference_port) == {"127.0.0.1"}
    status, text = http("GET", server.extra["metrics"])
    assert status == 200
    assert "ts_inference_requests_total" in str(text)


def test_children_run_with_telemetry_off_and_private_temp(server: Served) -> None:
    [wrapper] = [
        pid
        for pid in children_of(server.process.pid)
        if "torchserve" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    ]
    group = group_processes(wrapper)
    assert len(group) >= 3  # the wrapper, Java, and at least one Python worker
    for pid in group:
        env = environ_of(pid)
        assert env.get("ORT_DISABLE_TELEMETRY") == "1"
        for variable in ("TEMP", "TMPDIR", "LOG_LOCATION", "METRICS_LOCATION"):
            assert "/kubeserve-serve-" in env[variable], (variable, env[variable])


def test_workers_get_threads_from_the_cpu_budget(server: Served) -> None:
    [wrapper] = [
        pid
        for pid in children_of(server.process.pid)
        if "torchserve" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    ]
    workers = [
        pid
        for pid in group_processes(wrapper)
        if "model_service_worker" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    ]
    assert workers, "no TorchServe Python worker"
    # TorchServe's Java frontend passes its environment on to the worker it starts.
    for pid in workers:
        env = environ_of(pid)
        threads = str(min(2, len(os.sched_getaffinity(0))))  # a 1-CPU machine bounds it
        assert (env.get("OMP_NUM_THREADS"), env.get("MKL_NUM_THREADS")) == (threads, threads)


def test_sigterm_waits_for_java_and_workers(server: Served) -> None:
    [wrapper] = [
        pid
        for pid in children_of(server.process.pid)
        if "torchserve" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    ]
    assert server.stop() == 0
    # `kubeserve serve` returned only after every process it started had exited.
    assert group_processes(wrapper) == []
    assert "Traceback" not in server.stderr()


def test_a_traced_mar_serves_without_the_model_class(tmp_path: Path) -> None:
    """--torchscript trace: TorchServe loads the archived TorchScript alone (the .mar has no
    model file), batches per spec.batching, and answers like eager torch."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(
            [
                "package",
                TINY_MODEL,
                "--input-shape",
                "2,4",
                "--format",
                "mar",
                "--torchscript",
                "trace",
                "--name",
                NAME,
                "-o",
                str(tmp_path / "traced"),
            ]
        )
    assert status == 0, stderr.getvalue()
    assert "TorchScript by torch.jit.trace" in stdout.getvalue()
    md = write_md(tmp_path / "md.yaml", NAME, "torchserve", "traced", batching={"maxBatchSize": 8})
    with serving(md, tmp=tmp_path) as served:
        for rows in (ROWS[:1], ROWS):  # the trace used batch 2; both sizes must work
            code, body = http("POST", served.url, {"data": rows})
            assert code == 200, body
            assert max_diff(body["data"], torch_reference(rows)) <= 1e-5


def test_model_store_without_a_mar_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "README.txt").write_text("no model here")
    md = write_md(tmp_path / "md.yaml", NAME, "torchserve", "store")
    done = run_cli("serve", "-f", str(md), tmp=tmp_path)
    assert done.returncode == 1
    last = error_lines(done.stderr)[-1]
    assert last.startswith("kubeserve serve: error: the storage initializer could not fetch")
    assert ".mar" in last and "found: README.txt" in last


def test_a_mar_that_cannot_load_fails_fast_and_leaves_nothing_running(tmp_path: Path) -> None:
    store = tmp_path / "broken-store"
    store.mkdir()
    (store / f"{NAME}.mar").write_bytes(b"not a zip archive")
    md = write_md(tmp_path / "md.yaml", NAME, "torchserve", "broken-store")
    # Without the fast path, TorchServe retries the dying worker until --ready-timeout.
    done = run_cli("serve", "-f", str(md), "--ready-timeout", "100", tmp=tmp_path)
    assert done.returncode == 1
    assert error_lines(done.stderr)[-1] == (
        f"kubeserve serve: error: TorchServe could not load {NAME}.mar: its worker died while "
        "loading it (see the log lines above)"
    )
    assert "ACCESS_LOG" not in done.stderr  # our readiness polls are not the user's business
    leftovers = [
        pid
        for pid in (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
        if str(store) in _cmdline(pid)
    ]
    assert leftovers == []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# A handler whose initialize() blocks until the test opens a gate: the model stays "loading"
# for exactly as long as the test needs, with no race against a fixed sleep.
GATED_HANDLER = """\
import pathlib, time
from ts.torch_handler.base_handler import BaseHandler

GATE = pathlib.Path({gate!r})


class Gated(BaseHandler):
    def initialize(self, context):
        deadline = time.monotonic() + {bound}
        while not GATE.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the test never opened the gate")
            time.sleep(0.1)
        self.initialized = True

    def handle(self, data, context):
        return [{{"ready": True}} for _ in data]
"""
GATE_BOUND_S = 120


def test_readiness_probe_follows_the_models_worker_not_ping(tmp_path: Path) -> None:
    """The readinessProbe the operator puts on the TorchServe container, run as the kubelet
    would against a real TorchServe started with the cluster's config.properties: it fails
    while the model's handler is still in initialize() (when /ping already says 200), and
    passes once the worker is READY."""
    gate = tmp_path / "gate"
    store = _gated_mar(tmp_path, gate)
    md = ModelDeployment.model_validate(
        {
            "apiVersion": "kubeserve.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "gated", "namespace": "ml"},
            "spec": {"runtime": "torchserve", "model": {"uri": "s3://bucket/gated/"}},
        }
    )
    ports = {"http": free_port(), "management": _management_port(), "metrics": free_port()}
    probe = TorchServe().container(md, BuildContext("img", False, "IfNotPresent"))["readinessProbe"]
    with _torchserve(md, store, tmp_path, ports):
        _wait_for(lambda: _get(f"http://127.0.0.1:{ports['http']}/ping")[0] == 200, "/ping")
        workers = f"http://127.0.0.1:{ports['management']}/models/gated"
        _wait_for(lambda: _get(workers)[0] == 200, "the model's registration")
        # The worker is up and blocked in initialize(): /ping is already 200.
        assert _get(f"http://127.0.0.1:{ports['http']}/ping")[0] == 200
        ok, why = _kubelet_probe(probe, ports)
        assert not ok, "ready before the model's worker loaded it"
        assert "no READY worker yet" in why
        gate.touch()
        _wait_for(lambda: _kubelet_probe(probe, ports)[0], "the readiness probe to pass")
        status, _ = _get(f"http://127.0.0.1:{ports['http']}/predictions/gated", b"[]")
        assert status == 200


def _gated_mar(tmp: Path, gate: Path) -> Path:
    handler = tmp / "gated_handler.py"
    handler.write_text(GATED_HANDLER.format(gate=str(gate), bound=GATE_BOUND_S))
    store = tmp / "store"
    store.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "model_archiver.model_packaging",
            *("--model-name", "gated", "--version", "1.0"),
            *("--handler", str(handler), "--export-path", str(store)),
        ],
        check=True,
        timeout=120,
    )
    return store


@contextlib.contextmanager
def _torchserve(
    md: ModelDeployment, store: Path, tmp: Path, ports: dict[str, int]
) -> Iterator[None]:
    temp = tmp / "ts-tmp"
    temp.mkdir()
    config = tmp / "config.properties"
    config.write_text(
        config_properties(
            md,
            bind="127.0.0.1",
            inference_port=ports["http"],
            management_port=ports["management"],
            metrics_port=ports["metrics"],
            model_store=str(store),
        )
    )
    env = cli_env(tmp, TEMP=str(temp), TMPDIR=str(temp), LOG_LOCATION=str(temp))
    env["METRICS_LOCATION"] = str(temp)
    wrapper = subprocess.Popen(
        [
            str(find("torchserve")),
            *("--start", "--foreground", "--ts-config", str(config)),
            *("--model-store", str(store), "--disable-token-auth", "--ncs"),
        ],
        env=env,
        stdout=(tmp / "torchserve.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        yield
    finally:
        pid_deadline = time.monotonic() + 30
        while (
            wrapper.poll() is None
            and not (temp / PID_FILE).exists()
            and time.monotonic() < pid_deadline
        ):
            time.sleep(0.2)
        with contextlib.suppress(OSError, ValueError, IndexError):
            # `torchserve --stop` returns before Java exits: signal Java, wait for the wrapper.
            java = int((temp / PID_FILE).read_text().split()[0])
            os.kill(java, signal.SIGTERM)
        try:
            wrapper.wait(60)
        except subprocess.TimeoutExpired:
            wrapper.kill()
            wrapper.wait(10)


def _kubelet_probe(probe: dict[str, Any], ports: dict[str, int]) -> tuple[bool, str]:
    """Run a container probe as the kubelet does, with the pod's ports mapped to ours (an
    httpGet probe too, so that pointing the probe back at /ping fails this test)."""
    if "httpGet" in probe:
        port = ports[probe["httpGet"]["port"]]
        status, body = _get(f"http://127.0.0.1:{port}{probe['httpGet']['path']}")
        return isinstance(status, int) and 200 <= status < 400, str(body)
    command = list(probe["exec"]["command"])
    assert command[0] == "python"  # the image's interpreter; ours here
    command[0] = sys.executable
    command[-1] = command[-1].replace(f":{MANAGEMENT_PORT}/", f":{ports['management']}/")
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=probe["timeoutSeconds"], check=False
    )
    return done.returncode == 0, done.stderr


def _get(url: str, data: bytes | None = None) -> tuple[int | str, str]:
    try:
        with urllib.request.urlopen(url, data=data, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:  # not listening yet
        return type(exc).__name__, str(exc)


def _wait_for(condition: Any, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        time.sleep(0.25)
