"""Helpers for the tests of `kubeserve package` and `kubeserve serve` (imported by
test_package, test_serve, test_torchserve and test_tensorflow; not a conftest on purpose).

Every wait here is bounded, and none is a bare sleep: server readiness is the "serving ..." line
`kubeserve serve` prints once the model answers, read by a thread into a queue.
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # before anything imports onnxruntime

import contextlib
import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL_FILE = REPO / "examples" / "demo" / "tiny_model.py"
TINY_MODEL = f"{TINY_MODEL_FILE}:build"
KERAS_MODEL = f"{Path(__file__).resolve()}:build_keras"
CLI_TIMEOUT_S = 240.0  # one `kubeserve package` on a busy 2-core machine: ~5-20 s
READY_TIMEOUT_S = 120.0  # TorchServe needs 3-10 s here; the bound only catches hangs
STOP_TIMEOUT_S = 60.0


def build_keras() -> Any:
    """A small Keras model with a named input (the factory test_package/test_tensorflow use)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(4,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = keras.layers.Dense(3)(hidden)
    return keras.Model(inputs, outputs)


def cli_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "ORT_DISABLE_TELEMETRY": "1",
        "KERAS_HOME": str(tmp / "keras-home"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


def run_cli(*args: str, tmp: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`kubeserve ARGS` in a fresh interpreter (real exit status, real stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "kubeserve", *args],
        env=cli_env(tmp),
        cwd=cwd or tmp,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def run_python(code: str, *, tmp: Path) -> Any:
    """Run `code` in a fresh interpreter (TensorFlow stays out of pytest); it prints JSON."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=cli_env(tmp),
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def write_md(path: Path, name: str, runtime: str, uri: str, **spec: Any) -> Path:
    document = {
        "apiVersion": "kubeserve.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"runtime": runtime, "model": {"uri": uri}, **spec},
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@dataclass
class Served:
    """A running `kubeserve serve` subprocess and what it announced."""

    process: subprocess.Popen[str]
    url: str
    lines: list[str]
    stderr_path: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        match = re.match(r"(http://[^/]+)", self.url)
        assert match, self.url
        return match.group(1)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_S)
            raise AssertionError("kubeserve serve did not stop within the bound") from None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@contextlib.contextmanager
def serving(
    md_path: Path, *, tmp: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[Served]:
    """Start `kubeserve serve -f md_path --port 0`, wait (bounded) for its "serving" line."""
    stderr_path = tmp / f"serve-{md_path.stem}-{time.monotonic_ns()}.stderr"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "kubeserve", "serve", "-f", str(md_path), "--port", "0"],
            env=env or cli_env(tmp),
            cwd=cwd or tmp,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    served: Served | None = None
    try:
        lines = _read_until_serving(process, stderr_path)
        served = Served(process, _url(lines[0]), lines, stderr_path, _extra(lines))
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)


def _read_until_serving(process: subprocess.Popen[str], stderr_path: Path) -> list[str]:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    announced: list[str] = []
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"no 'serving' line after {READY_TIMEOUT_S} s; stderr:\n"
                f"{stderr_path.read_text()[-3000:]}"
            )
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line is None:
            process.wait(timeout=STOP_TIMEOUT_S)
            raise AssertionError(
                f"kubeserve serve exited with {process.returncode} before "
                f"serving; stderr:\n{stderr_path.read_text()[-3000:]}"
            )
        if line.startswith("serving ") or announced:
            announced.append(line)
        if line.startswith("press Ctrl-C"):
            return announced


def _url(line: str) -> str:
    match = re.search(r" at (http://\S+)$", line)
    assert match, line
    return match.group(1)


def _extra(lines: list[str]) -> dict[str, str]:
    extra = {}
    for line in lines[1:]:
        match = re.match(r"\s+(\w+):\s+(?:POST )?(http://\S+)", line)
        if match:
            extra[match.group(1)] = match.group(2)
    return extra


def http(method: str, url: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
    """A JSON request with the standard library; returns (status, decoded body)."""
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        status = exc.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def v2_infer(url: str, rows: list[list[float]]) -> list[list[float]]:
    status, body = http(
        "POST",
        f"{url}/infer",
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [len(rows), len(rows[0])],
                    "datatype": "FP32",
                    "data": [value for row in rows for value in row],
                }
            ],
        },
    )
    assert status == 200, body
    output = body["outputs"][0]
    width = output["shape"][1]
    data = output["data"]
    return [data[i : i + width] for i in range(0, len(data), width)]


def torch_reference(rows: list[list[float]]) -> list[list[float]]:
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("_tiny_model_reference", TINY_MODEL_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with torch.no_grad():
        result: list[list[float]] = module.build()(torch.tensor(rows)).tolist()
    return result


def max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    assert len(a) == len(b) and all(len(x) == len(y) for x, y in zip(a, b, strict=True))
    return max(abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))


def listen_addresses(port: int) -> set[str]:
    """The local addresses with a LISTEN socket on `port` (from /proc/net/tcp and tcp6)."""
    addresses = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state = fields[1], fields[3]
                host_hex, port_hex = local.split(":")
                if state == "0A" and int(port_hex, 16) == port and len(host_hex) == width:
                    addresses.add(_decode_address(host_hex))
    return addresses


def _decode_address(host_hex: str) -> str:
    raw = bytes.fromhex(host_hex)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc/net/tcp6 stores four little-endian 32-bit words.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    address = socket.inet_ntop(socket.AF_INET6, words)
    # Java listens on IPv6 sockets even for IPv4 addresses: ::ffff:127.0.0.1 is 127.0.0.1.
    return address.removeprefix("::ffff:")


def non_loopback_ipv4() -> str | None:
    """An address of this machine other than 127.0.0.1 (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 1))
            address = str(sock.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def group_processes(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}
