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
import socket
from collections.abc import Iterator
from pathlib import Path

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

from kubeserve.cli import main
from kubeserve.local.serve.binaries import find, find_java

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
