"""Build our images with podman and run them for real on 127.0.0.1.

Every container runs the way the operator's pods do: `--user 1000:1000`, `--read-only` with a
writable tmpfs at /tmp only (an emptyDir in Kubernetes: exec allowed, mode 1777), and
`--cap-drop ALL`. Models are made in the test (torch -> model.onnx, torch-model-archiver ->
.mar) and mounted read-only at /mnt/models.

The images are built once per module through images/build.sh (layers are cached in the build
folder, so a second run takes seconds). tfserving is not built here: its base exists only in
a registry (tests/lint/test_hadolint.py checks its Dockerfile; the kind e2e suite builds it).

Skips with one reason only when podman itself cannot run (`podman info` fails); a failing
build or container is a failure.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import kubeserve

pytestmark = [pytest.mark.images, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TAG = os.environ.get("KUBESERVE_TEST_IMAGE_TAG", "test")
PREFIX = os.environ.get("KUBESERVE_IMAGE_PREFIX", "kubeserve")
IMAGES = ("operator", "onnxruntime", "storage-initializer", "torchserve")
BUILD_TIMEOUT_S = 3600  # cold: about 6 minutes here; CI machines may download slower
READY_TIMEOUT_S = 120
# `podman stop -t 10` must finish well before its 10 s SIGKILL deadline.
STOP_LIMIT_S = 6.0
# How every serving container runs (see the module docstring).
HARDENED = [
    "--user", "1000:1000",
    "--read-only",
    "--tmpfs", "/tmp:rw,exec,nosuid,nodev,mode=1777",
    "--cap-drop", "ALL",
    "--security-opt", "no-new-privileges",
]  # fmt: skip


# --- podman ------------------------------------------------------------------------------


class Podman:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def run(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
            )
        return proc

    def remove(self, name: str) -> None:
        self.run("rm", "-f", "-t", "0", name, timeout=60, check=False)

    def logs(self, name: str) -> str:
        proc = self.run("logs", name, check=False, timeout=30)
        return proc.stdout + proc.stderr

    def stop_seconds(self, name: str) -> float:
        started = time.monotonic()
        self.run("stop", "-t", "10", name, timeout=30)
        seconds = time.monotonic() - started
        print(f"podman stop: {seconds:.2f} s", file=sys.stderr)  # shown with -rA
        return seconds

    def exit_code(self, name: str) -> int:
        out = self.run("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        return int(out)


@pytest.fixture(scope="module")
def podman() -> Podman:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (images/setup-podman.sh installs it)")
    printed = subprocess.run(
        [str(REPO / "images" / "podman" / "env.sh"), "--print"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    env = dict(os.environ)
    env.update(line.split("=", 1) for line in printed.stdout.splitlines() if "=" in line)
    info = subprocess.run(["podman", "info"], env=env, capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        pytest.skip(f"podman cannot run here: `podman info` failed: {info.stderr.strip()[-500:]}")
    return Podman(env)


@pytest.fixture(scope="module")
def images(podman: Podman) -> dict[str, str]:
    """Build the four images once per module; returns name -> image reference."""
    env = dict(podman.env, KUBESERVE_IMAGE_PREFIX=PREFIX, CONTAINER_ENGINE="podman")
    proc = subprocess.run(
        [str(REPO / "images" / "build.sh"), "--only", ",".join(IMAGES), TAG],
        env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"images/build.sh failed:\n{proc.stderr[-6000:]}")
    refs = {name: f"{PREFIX}/{name}:{TAG}" for name in IMAGES}
    for line in proc.stdout.splitlines():
        print(line, file=sys.stderr)  # "built REF SECONDS s": shown with -rA / on failure
    return refs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_json(url: str, body: Any = None, timeout: float = 10) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"} if data else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def wait_until(
    what: str, probe: Any, podman: Podman, name: str, timeout: float = READY_TIMEOUT_S
) -> Any:
    """Poll ``probe()`` until it returns a truthy value; bounded, with the logs on failure."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        state = podman.run("inspect", "--format", "{{.State.Status}}", name, check=False)
        if state.stdout.strip() in ("exited", "stopped"):
            break
        time.sleep(0.5)
    pytest.fail(f"{what} not reached (last: {last!r}); logs:\n{podman.logs(name)[-4000:]}")


def readable_dir(path: Path) -> Path:
    """Make a test directory readable by the container's UID 1000 (pytest makes it 0700)."""
    path.chmod(0o755)
    for child in path.rglob("*"):
        child.chmod(0o755 if child.is_dir() else 0o644)
    return path


@pytest.fixture
def container(podman: Podman) -> Iterator[str]:
    name = f"kubeserve-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        yield name
    finally:
        podman.remove(name)


# --- image metadata ---------------------------------------------------------------------


@pytest.mark.parametrize("name", IMAGES)
def test_image_metadata(podman: Podman, images: dict[str, str], name: str) -> None:
    config = json.loads(podman.run("image", "inspect", images[name]).stdout)[0]["Config"]
    assert config["User"] == "1000:1000"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["TMPDIR"] == "/tmp" and env["HOME"] == "/tmp"
    if name in ("onnxruntime", "torchserve"):
        assert env["ORT_DISABLE_TELEMETRY"] == "1"
    if name == "torchserve":
        assert env["TEMP"] == "/tmp"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == f"kubeserve-{name}"
    assert labels["org.opencontainers.image.version"] == TAG
    # Exec form, tini first: signals reach the process, zombies are reaped.
    assert config["Entrypoint"][:2] == ["/usr/bin/tini", "--"]


# --- operator -----------------------------------------------------------------------------


def test_operator_prints_version(podman: Podman, images: dict[str, str]) -> None:
    proc = podman.run("run", "--rm", *HARDENED, "--network=none", images["operator"], "version")
    assert proc.stdout.strip() == kubeserve.__version__


class _DiscoveryApi:
    """Just enough of an API server for kopf to start and idle: discovery with no resources."""

    DOCUMENTS: dict[str, Any] = {
        "/api": {"kind": "APIVersions", "versions": ["v1"]},
        "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
        "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": []},
    }

    def __init__(self) -> None:
        documents = self.DOCUMENTS
        self.paths: list[str] = []
        paths = self.paths

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                paths.append(path)
                document = documents.get(path, {"kind": "Status", "code": 404})
                data = json.dumps(document).encode()
                self.send_response(200 if path in documents else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def test_operator_runs_and_stops_promptly(
    podman: Podman, images: dict[str, str], container: str, tmp_path: Path
) -> None:
    api = _DiscoveryApi()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{api.port}"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        })
    )  # fmt: skip
    kubeconfig.chmod(0o644)
    try:
        podman.run(
            "run", "-d", "--name", container, *HARDENED, "--network=host",
            "-v", f"{kubeconfig}:/etc/kubeserve/kubeconfig:ro",
            "-e", "KUBECONFIG=/etc/kubeserve/kubeconfig",
            images["operator"], "run", "--all-namespaces", "--metrics-port", "0",
            "--liveness", f"http://127.0.0.1:{free_port()}/healthz",
        )  # fmt: skip
        # kopf logged in and asked the API server what it serves: the operator is up.
        wait_until("API discovery", lambda: "/apis" in api.paths, podman, container, 60)
        time.sleep(1)
        state = podman.run("inspect", "--format", "{{.State.Status}}", container).stdout.strip()
        assert state == "running", podman.logs(container)[-3000:]
        seconds = podman.stop_seconds(container)
        assert seconds < STOP_LIMIT_S, podman.logs(container)[-3000:]
        assert podman.exit_code(container) == 0, podman.logs(container)[-3000:]
    finally:
        api.httpd.shutdown()
        api.httpd.server_close()


# --- onnxruntime --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    model.eval()
    directory = tmp_path_factory.mktemp("onnx")
    example = torch.randn(2, 4)
    torch.onnx.export(
        model, (example,), str(directory / "model.onnx"),
        input_names=["input"], output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        dynamo=False,
    )  # fmt: skip
    return readable_dir(directory), model


def test_onnxruntime_serves_v2_infer(
    podman: Podman, images: dict[str, str], container: str, onnx_model: tuple[Path, Any]
) -> None:
    import torch

    model_dir, model = onnx_model
    port = free_port()
    podman.run(
        "run", "-d", "--name", container, *HARDENED,
        "-p", f"127.0.0.1:{port}:8080",
        "-v", f"{model_dir}:/mnt/models:ro",
        images["onnxruntime"],
        "--model-dir", "/mnt/models", "--model-name", "tiny", "--host", "0.0.0.0", "--port", "8080",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    wait_until("/v2/health/ready", lambda: http_json(f"{base}/v2/health/ready")[0] == 200,
               podman, container)  # fmt: skip
    rows = [[0.5, -1.0, 2.0, 0.25], [1.0, 2.0, 3.0, 4.0], [-3.0, 0.0, 0.5, 1.5]]
    status, body = http_json(
        f"{base}/v2/models/tiny/infer",
        {"inputs": [{"name": "input", "shape": [3, 4], "datatype": "FP32",
                     "data": [x for row in rows for x in row]}]},
    )  # fmt: skip
    assert status == 200, body
    (output,) = body["outputs"]
    assert output["shape"] == [3, 3]
    with torch.no_grad():
        expected = model(torch.tensor(rows)).flatten().tolist()
    assert output["data"] == pytest.approx(expected, abs=1e-5)

    seconds = podman.stop_seconds(container)
    assert seconds < STOP_LIMIT_S
    assert podman.exit_code(container) == 0, podman.logs(container)[-3000:]


# --- torchserve ---------------------------------------------------------------------------

HANDLER = '''
"""A tiny TorchServe handler: a JSON list of rows in, a list of output rows out."""
import json

import torch
from ts.torch_handler.base_handler import BaseHandler


class RowsHandler(BaseHandler):
    def preprocess(self, data):
        rows = []
        for request in data:
            body = request.get("body") if request.get("body") is not None else request.get("data")
            if isinstance(body, (bytes, bytearray)):
                body = json.loads(body)
            rows.append(body)
        self._sizes = [len(r) for r in rows]
        return torch.tensor([row for r in rows for row in r], dtype=torch.float32)

    def postprocess(self, data):
        out, results, start = data.tolist(), [], 0
        for size in self._sizes:
            results.append(out[start:start + size])
            start += size
        return results
'''


@pytest.fixture(scope="module")
def mar_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    import torch

    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Tanh())
    model.eval()
    work = tmp_path_factory.mktemp("mar")
    torch.jit.trace(model, torch.randn(1, 4)).save(str(work / "model.pt"))
    (work / "handler.py").write_text(HANDLER)
    store = work / "store"
    store.mkdir()
    archiver = shutil.which("torch-model-archiver") or str(
        Path(sys.executable).with_name("torch-model-archiver")
    )
    subprocess.run(
        [archiver, "--model-name", "tiny", "--version", "1.0",
         "--serialized-file", str(work / "model.pt"), "--handler", str(work / "handler.py"),
         "--export-path", str(store)],
        check=True, timeout=120, capture_output=True,
    )  # fmt: skip
    return readable_dir(store), model


def test_torchserve_predicts(
    podman: Podman, images: dict[str, str], container: str, mar_model: tuple[Path, Any]
) -> None:
    import torch

    store, model = mar_model
    port, management, metrics = free_port(), free_port(), free_port()
    # The image's default command and config.properties: everything in /mnt/models is loaded.
    podman.run(
        "run", "-d", "--name", container, *HARDENED,
        "-p", f"127.0.0.1:{port}:8080",
        "-p", f"127.0.0.1:{management}:8081",
        "-p", f"127.0.0.1:{metrics}:8082",
        "-v", f"{store}:/mnt/models:ro",
        images["torchserve"],
    )  # fmt: skip
    rows = [[0.1, 0.2, 0.3, 0.4], [-1.0, 2.0, -3.0, 4.0]]

    def predict() -> Any:
        status, body = http_json(f"http://127.0.0.1:{port}/predictions/tiny", rows, timeout=30)
        return body if status == 200 else None

    body = wait_until("a prediction", predict, podman, container)
    with torch.no_grad():
        expected = model(torch.tensor(rows)).tolist()
    assert len(body) == 2
    for got, want in zip(body, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-5)
    # No token was sent: token authorization is off. Metrics are served in Prometheus format;
    # the management API listens on the container's 127.0.0.1 only, so even a published port
    # does not reach it.
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10) as response:
        assert "ts_inference_requests_total" in response.read().decode()
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{management}/models", timeout=5)

    seconds = podman.stop_seconds(container)
    assert seconds < STOP_LIMIT_S, podman.logs(container)[-3000:]
    assert podman.exit_code(container) != 137


# --- storage initializer ------------------------------------------------------------------


class _Server:
    """A host-side HTTP server on 127.0.0.1 (the container reaches it with --network=host)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.authorization: list[str | None] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.authorization.append(self.headers.get("Authorization"))
                if self.path.startswith("/slow"):
                    self.send_response(200)
                    self.send_header("Content-Length", str(1 << 24))
                    self.end_headers()
                    try:
                        for _ in range(1200):
                            self.wfile.write(b"\0" * 1024)
                            time.sleep(0.05)
                    except OSError:
                        pass
                    return
                target = outer.root / self.path.lstrip("/").split("?", 1)[0]
                if not target.is_file():
                    self.send_error(404)
                    return
                data = target.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def model_server(tmp_path: Path) -> Iterator[_Server]:
    root = tmp_path / "www"
    root.mkdir()
    server = _Server(root)
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def test_storage_initializer_downloads_with_mounted_secret(
    podman: Podman, images: dict[str, str], container: str, tmp_path: Path,
    model_server: _Server, onnx_model: tuple[Path, Any],
) -> None:  # fmt: skip
    token = "container-bearer-SECRET-4f3e2d1c"
    (model_server.root / "classifier.onnx").write_bytes((onnx_model[0] / "model.onnx").read_bytes())
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "HTTPS_BEARER_TOKEN").write_text(token + "\n")
    readable_dir(secret)
    dest = tmp_path / "models"
    dest.mkdir()
    dest.chmod(0o777)  # an emptyDir is world-writable
    proc = podman.run(
        "run", "--name", container, *HARDENED, "--network=host",
        "-v", f"{dest}:/mnt/models",
        "-v", f"{secret}:/var/run/secrets/kubeserve/storage:ro",
        images["storage-initializer"],
        f"http://127.0.0.1:{model_server.port}/classifier.onnx?sig=QUERYSECRET", "/mnt/models",
        "--runtime", "onnxruntime",
        check=False, timeout=120,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert model_server.authorization == [f"Bearer {token}"]
    assert token not in output and "QUERYSECRET" not in output
    assert sorted(p.name for p in dest.iterdir()) == [".kubeserve-storage.json", "model.onnx"]
    record = json.loads((dest / ".kubeserve-storage.json").read_text())
    assert record["uri"].endswith("/classifier.onnx?REDACTED")
    assert record["bytes"] == (dest / "model.onnx").stat().st_size


def test_storage_initializer_stops_promptly_mid_download(
    podman: Podman, images: dict[str, str], container: str, tmp_path: Path,
    model_server: _Server,
) -> None:  # fmt: skip
    dest = tmp_path / "models"
    dest.mkdir()
    dest.chmod(0o777)
    podman.run(
        "run", "-d", "--name", container, *HARDENED, "--network=host",
        "-v", f"{dest}:/mnt/models",
        images["storage-initializer"],
        f"http://127.0.0.1:{model_server.port}/slow.onnx", "/mnt/models",
    )  # fmt: skip
    wait_until("the download start", lambda: model_server.authorization, podman, container, 60)
    time.sleep(1)
    seconds = podman.stop_seconds(container)
    assert seconds < STOP_LIMIT_S, podman.logs(container)[-3000:]
    assert podman.exit_code(container) == 143  # SIGTERM, handled: staging removed
    assert list(dest.iterdir()) == []
