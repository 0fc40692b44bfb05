"""The storage initializer against real servers on 127.0.0.1.

- https: fsspec's HTTP filesystem (aiohttp) serves http:// and https:// through the same code,
  so the https path's own logic (bearer token header, timeouts, query redaction, failure
  handling) is exercised over http://127.0.0.1 with a real http.server in a thread. Our code
  allows a bearer token over plain http only to loopback hosts, which is what makes this work.
- s3: moto's server mode (`moto_server -H 127.0.0.1`), reached through a custom endpoint given
  as the AWS_ENDPOINT_URL file of a temporary credentials directory: the mounted-Secret path.
- The CLI runs as a subprocess, so its whole stdout and stderr can be scanned for secrets.
Every wait is bounded.
"""

from __future__ import annotations

import http.server
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeserve.dataplane.storage import archive, credentials, uri
from kubeserve.dataplane.storage.errors import ArchiveError, LayoutError, UsageError
from kubeserve.dataplane.storage.layout import check

pytestmark = pytest.mark.runtimes

RUN_TIMEOUT_S = 90
SECRET_KEY = "s3cr3t-Key-VALUE-9f8e7d6c5b4a"
ACCESS_KEY = "AKIAKUBESERVETEST0001"
BEARER = "bearer-TOKEN-VALUE-0123456789abcdef"
SIGNATURE = "X-Amz-Signature=SIGNATUREVALUE0123456789"


# --- helpers -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def base_env(tmp: Path, creds_dir: Path | None = None, **extra: str) -> dict[str, str]:
    """A clean environment: no AWS/GCP config from the machine, no mounted Secret by default."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "GOOGLE_", "HTTPS_BEARER", "KUBESERVE_"))
    }
    env.update(
        HOME=str(tmp),
        ORT_DISABLE_TELEMETRY="1",
        AWS_CONFIG_FILE=str(tmp / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        KUBESERVE_CREDENTIALS_DIR=str(creds_dir or tmp / "no-credentials"),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    env.update(extra)
    return env


def run_cli(
    *args: str | Path, env: dict[str, str], timeout: float = RUN_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubeserve.dataplane.storage", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_no_secret(proc: subprocess.CompletedProcess[str], *secrets: str) -> None:
    output = proc.stdout + proc.stderr
    for secret in secrets:
        assert secret not in output, f"a secret value leaked into the output:\n{output}"


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def visible(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


def marker(dest: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((dest / ".kubeserve-storage.json").read_text())
    return data


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def tar_file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def tar_link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


# --- an HTTP server in a thread -----------------------------------------------------------


class HttpServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.headers: list[dict[str, str]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                server.headers.append(dict(self.headers))
                path = self.path.split("?", 1)[0]
                if path == "/truncated.onnx":
                    # Promise 1 MB, send 64 KB, hang up: a download that fails midway.
                    self.send_response(200)
                    self.send_header("Content-Length", str(1 << 20))
                    self.end_headers()
                    self.wfile.write(b"\0" * (64 << 10))
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if path == "/slow.onnx":
                    self.send_response(200)
                    self.send_header("Content-Length", str(1 << 20))
                    self.end_headers()
                    try:
                        for _ in range(600):
                            self.wfile.write(b"\0" * 1024)
                            self.wfile.flush()
                            time.sleep(0.05)
                    except OSError:
                        pass
                    return
                target = server.root / path.lstrip("/")
                if not target.is_file():
                    self.send_error(404)
                    return
                data = target.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_HEAD = do_GET

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    root = tmp_path / "www"
    root.mkdir()
    server = HttpServer(root)
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


# --- moto's S3 server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """moto's request log: one line per request ("GET /bucket/key HTTP/1.1" 200)."""
    return tmp_path_factory.mktemp("moto") / "moto.log"


@pytest.fixture(scope="module")
def moto(moto_log: Path) -> Iterator[str]:
    binary = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    port = free_port()
    log = moto_log
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto_server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
    try:
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def bucket(moto: str) -> Any:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=moto,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="models")
    # A TF Serving export under a name folder (hoisted), a .mar, an archive, an empty "folder".
    s3.put_object(Bucket="models", Key="tf/half_plus_two/1/saved_model.pb", Body=b"pb" * 100)
    s3.put_object(Bucket="models", Key="tf/half_plus_two/1/variables/variables.index", Body=b"i")
    s3.put_object(Bucket="models", Key="tf/half_plus_two/1/variables/", Body=b"")
    s3.put_object(Bucket="models", Key="ts/resnet-v2.mar", Body=b"PK-not-really" * 10)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"onnx" * 50
        info = tarfile.TarInfo("export/classifier.onnx")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    s3.put_object(Bucket="models", Key="onnx/classifier.tar.gz", Body=buf.getvalue())
    s3.put_object(Bucket="models", Key="escape/ok.onnx", Body=b"x")
    s3.put_object(Bucket="models", Key="escape/../../evil.onnx", Body=b"x")
    return s3


@pytest.fixture
def s3_creds(tmp_path: Path, moto: str) -> Path:
    """A mounted-Secret directory: one file per key, trailing newlines as kubectl writes them."""
    creds = tmp_path / "secret"
    creds.mkdir()
    (creds / "AWS_ACCESS_KEY_ID").write_text(ACCESS_KEY + "\n")
    (creds / "AWS_SECRET_ACCESS_KEY").write_text(SECRET_KEY + "\n")
    (creds / "AWS_ENDPOINT_URL").write_text(moto + "\n")
    (creds / "AWS_REGION").write_text("us-east-1")
    return creds


# --- https (over http://127.0.0.1) ----------------------------------------------------------


def test_https_single_file_with_bearer_token_from_env(
    tmp_path: Path, http_server: HttpServer
) -> None:
    (http_server.root / "model.onnx").write_bytes(b"onnx-bytes" * 100)
    dest = tmp_path / "models"
    dest.mkdir()  # an emptyDir mount point exists and is empty
    env = base_env(tmp_path, HTTPS_BEARER_TOKEN=BEARER)
    proc = run_cli(http_server.url("model.onnx"), dest, "--runtime", "onnxruntime", env=env)
    assert proc.returncode == 0, proc.stderr
    assert (dest / "model.onnx").read_bytes() == b"onnx-bytes" * 100
    assert http_server.headers[-1]["Authorization"] == f"Bearer {BEARER}"
    record = marker(dest)
    assert record["uri"] == http_server.url("model.onnx")
    assert record["bytes"] == 1000
    assert isinstance(record["seconds"], float) and record["seconds"] >= 0
    assert visible(dest) == [".kubeserve-storage.json", "model.onnx"]
    assert_no_secret(proc, BEARER)
    assert "1000 bytes" in proc.stderr


def test_presigned_query_never_logged(tmp_path: Path, http_server: HttpServer) -> None:
    (http_server.root / "resnet.onnx").write_bytes(b"m")
    dest = tmp_path / "models"
    url = http_server.url(f"resnet.onnx?X-Amz-Credential=abc&{SIGNATURE}")
    proc = run_cli(url, dest, "--runtime", "onnxruntime", env=base_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    # One .onnx with another name is renamed to model.onnx.
    assert visible(dest) == [".kubeserve-storage.json", "model.onnx"]
    assert marker(dest)["uri"] == http_server.url("resnet.onnx") + "?REDACTED"
    assert_no_secret(proc, "SIGNATUREVALUE", "X-Amz-Credential")
    assert "SIGNATUREVALUE" not in (dest / ".kubeserve-storage.json").read_text()


def test_presigned_query_not_in_error_messages(tmp_path: Path, http_server: HttpServer) -> None:
    url = http_server.url(f"missing.onnx?{SIGNATURE}")
    proc = run_cli(url, tmp_path / "models", env=base_env(tmp_path))
    assert proc.returncode == 3
    assert "not found" in error_line(proc)
    assert_no_secret(proc, "SIGNATUREVALUE")


def test_bearer_token_from_mounted_file_and_env_beats_file(
    tmp_path: Path, http_server: HttpServer
) -> None:
    (http_server.root / "model.onnx").write_bytes(b"m")
    creds = tmp_path / "secret"
    creds.mkdir()
    (creds / "HTTPS_BEARER_TOKEN").write_text("from-file-" + BEARER + "\n")
    proc = run_cli(http_server.url("model.onnx"), tmp_path / "a", env=base_env(tmp_path, creds))
    assert proc.returncode == 0, proc.stderr
    assert http_server.headers[-1]["Authorization"] == f"Bearer from-file-{BEARER}"
    assert "HTTPS_BEARER_TOKEN (file)" in proc.stderr
    env = base_env(tmp_path, creds, HTTPS_BEARER_TOKEN=BEARER)
    proc = run_cli(http_server.url("model.onnx"), tmp_path / "b", env=env)
    assert proc.returncode == 0, proc.stderr
    assert http_server.headers[-1]["Authorization"] == f"Bearer {BEARER}"
    assert "HTTPS_BEARER_TOKEN (env)" in proc.stderr
    assert_no_secret(proc, BEARER)


def test_bearer_token_refused_over_plain_http_to_a_remote_host(tmp_path: Path) -> None:
    env = base_env(tmp_path, HTTPS_BEARER_TOKEN=BEARER)
    proc = run_cli("http://models.example.invalid/m.onnx", tmp_path / "m", env=env)
    assert proc.returncode == 2
    assert "over plain http" in error_line(proc)
    assert_no_secret(proc, BEARER)


@pytest.mark.parametrize("existing_dest", [True, False], ids=["mount-point", "new-dir"])
def test_failed_download_leaves_dest_empty(
    tmp_path: Path, http_server: HttpServer, existing_dest: bool
) -> None:
    dest = tmp_path / "models"
    if existing_dest:
        dest.mkdir()
    proc = run_cli(http_server.url("truncated.onnx"), dest, env=base_env(tmp_path))
    assert proc.returncode == 3, proc.stderr
    assert error_line(proc).startswith("kubeserve-storage: error: cannot fetch")
    assert visible(dest) == []  # no partial file, no staging directory
    assert dest.exists() == existing_dest
    assert sorted(p.name for p in tmp_path.iterdir() if "staging" in p.name) == []


def test_sigterm_during_download_exits_promptly_and_cleans_up(
    tmp_path: Path, http_server: HttpServer
) -> None:
    dest = tmp_path / "models"
    dest.mkdir()
    cmd = [sys.executable, "-m", "kubeserve.dataplane.storage", http_server.url("slow.onnx"), dest]
    proc = subprocess.Popen(
        cmd, env=base_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while not any(p.name.startswith(".kubeserve-staging-") for p in dest.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "the download never started"
        time.sleep(0.05)
    time.sleep(0.5)  # some bytes on disk
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert time.monotonic() - started < 5
    assert proc.returncode == 128 + signal.SIGTERM
    assert visible(dest) == []


# --- s3 (moto server, credentials from mounted files) ---------------------------------------


def test_s3_prefix_tfserving_with_mounted_credentials(
    tmp_path: Path, bucket: Any, s3_creds: Path
) -> None:
    dest = tmp_path / "models"
    dest.mkdir()
    env = base_env(tmp_path, s3_creds)
    proc = run_cli("s3://models/tf/", dest, "--runtime", "tfserving", env=env)
    assert proc.returncode == 0, proc.stderr
    # tf/half_plus_two/1/... : the single name folder is hoisted to <version>/saved_model.pb
    assert (dest / "1" / "saved_model.pb").read_bytes() == b"pb" * 100
    assert (dest / "1" / "variables" / "variables.index").is_file()
    assert marker(dest) | {"seconds": 0.0} == {
        "uri": "s3://models/tf/",
        "bytes": 201,
        "seconds": 0.0,
    }
    assert "AWS_ENDPOINT_URL (file)" in proc.stderr
    assert "AWS_SECRET_ACCESS_KEY (file)" in proc.stderr
    assert_no_secret(proc, SECRET_KEY)


def test_s3_single_mar_renamed_to_model_name(tmp_path: Path, bucket: Any, s3_creds: Path) -> None:
    dest = tmp_path / "models"
    env = base_env(tmp_path, s3_creds)
    proc = run_cli(
        "s3://models/ts/resnet-v2.mar",
        dest,
        "--runtime",
        "torchserve",
        "--model-name",
        "resnet",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert visible(dest) == [".kubeserve-storage.json", "resnet.mar"]
    assert_no_secret(proc, SECRET_KEY)


def test_s3_archive_is_unpacked(tmp_path: Path, bucket: Any, s3_creds: Path) -> None:
    dest = tmp_path / "models"
    env = base_env(tmp_path, s3_creds)
    proc = run_cli("s3://models/onnx/classifier.tar.gz", dest, "--runtime", "onnxruntime", env=env)
    assert proc.returncode == 0, proc.stderr
    assert (dest / "model.onnx").read_bytes() == b"onnx" * 50
    assert visible(dest) == [".kubeserve-storage.json", "model.onnx"]


def test_s3_missing_object_and_unsafe_key(tmp_path: Path, bucket: Any, s3_creds: Path) -> None:
    env = base_env(tmp_path, s3_creds)
    proc = run_cli("s3://models/nothing-here/", tmp_path / "a", env=env)
    assert proc.returncode == 3
    assert "s3://models/nothing-here/" in error_line(proc)
    proc = run_cli("s3://models/escape/", tmp_path / "b", env=env)
    assert proc.returncode == 3
    assert "unsafe name" in error_line(proc)
    assert not (tmp_path / "evil.onnx").exists()
    assert visible(tmp_path / "b") == []
    assert_no_secret(proc, SECRET_KEY)


def test_s3_env_credentials_beat_files(tmp_path: Path, bucket: Any, s3_creds: Path) -> None:
    # The pair from env is wrong on purpose (moto accepts any key), so only the source shows.
    env = base_env(tmp_path, s3_creds, AWS_ACCESS_KEY_ID="AKIAENV", AWS_SECRET_ACCESS_KEY="envkey")
    proc = run_cli("s3://models/ts/resnet-v2.mar", tmp_path / "m", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "AWS_ACCESS_KEY_ID (env)" in proc.stderr
    assert "AWS_SECRET_ACCESS_KEY (env)" in proc.stderr
    assert "AWS_ENDPOINT_URL (file)" in proc.stderr
    assert_no_secret(proc, SECRET_KEY, "envkey")


# --- the model cache and the termination report (moto) -------------------------------------


def object_gets(moto_log: Path, s3: Any, key: str) -> int:
    """How many times moto served the data of ``models/key`` (GET; HEAD and listings excluded).

    A request to a fresh sentinel key first, and its log line awaited: every request of a CLI
    that has exited is logged by then.
    """
    sentinel = f"sentinel-{time.monotonic_ns()}"
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_object(Bucket="models", Key=sentinel)
    deadline = time.monotonic() + 10
    while sentinel not in moto_log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "moto never logged the sentinel request"
        time.sleep(0.05)
    return moto_log.read_text(errors="replace").count(f'"GET /models/{key} HTTP/1.1" 200')


def termination_report(path: Path) -> dict[str, Any]:
    from kubeserve.dataplane.storage.report import parse_report

    text = path.read_text()
    parsed = parse_report(text)
    assert parsed is not None, text
    return parsed


def cached_run(
    tmp_path: Path, s3_creds: Path, model_uri: str, dest: Path, cache_dir: Path, max_size: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    log = tmp_path / f"termination-{dest.name}"
    env = base_env(tmp_path, s3_creds, KUBESERVE_TERMINATION_LOG=str(log))
    proc = run_cli(
        model_uri,
        dest,
        "--runtime",
        "onnxruntime",
        f"--cache-dir={cache_dir}",
        f"--cache-max-size={max_size}",
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert_no_secret(proc, SECRET_KEY)
    return proc, termination_report(log)


def test_s3_cache_miss_then_hit_then_changed_object_misses(
    tmp_path: Path, bucket: Any, s3_creds: Path, moto_log: Path
) -> None:
    key = "cached/resnet.onnx"
    first, second = os.urandom(256 << 10), os.urandom(256 << 10)
    bucket.put_object(Bucket="models", Key=key, Body=first)
    cache_dir = tmp_path / "cache"
    before = object_gets(moto_log, bucket, key)

    # Pod 1: a miss downloads and fills the cache.
    proc, got = cached_run(
        tmp_path, s3_creds, f"s3://models/{key}", tmp_path / "p1", cache_dir, "1Gi"
    )
    assert got["cache"] == "miss" and got["bytes"] == len(first), proc.stderr
    assert (tmp_path / "p1" / "model.onnx").read_bytes() == first
    assert object_gets(moto_log, bucket, key) == before + 1

    # Pod 2: a hit, served from the cache without one GET of the object.
    proc, got = cached_run(
        tmp_path, s3_creds, f"s3://models/{key}", tmp_path / "p2", cache_dir, "1Gi"
    )
    assert got["cache"] == "hit" and got["bytes"] == len(first), proc.stderr
    assert (tmp_path / "p2" / "model.onnx").read_bytes() == first
    assert object_gets(moto_log, bucket, key) == before + 1

    # Pod 2's containers restart: its emptyDir still holds the model.
    proc, got = cached_run(
        tmp_path, s3_creds, f"s3://models/{key}", tmp_path / "p2", cache_dir, "1Gi"
    )
    assert got == {"downloadSeconds": 0.0, "bytes": len(first), "cache": "present"}

    # The object changes at the same URI: its ETag does, so the cache misses.
    bucket.put_object(Bucket="models", Key=key, Body=second)
    proc, got = cached_run(
        tmp_path, s3_creds, f"s3://models/{key}", tmp_path / "p3", cache_dir, "1Gi"
    )
    assert got["cache"] == "miss", proc.stderr
    assert (tmp_path / "p3" / "model.onnx").read_bytes() == second
    assert object_gets(moto_log, bucket, key) == before + 2


def test_s3_cache_prefix_two_initializers_at_once(
    tmp_path: Path, bucket: Any, s3_creds: Path, moto_log: Path
) -> None:
    """Two pods of one model start together: one downloads, both get the same model."""
    keys = ["twins/model.onnx", "twins/extra/labels.txt"]
    for key in keys:
        bucket.put_object(Bucket="models", Key=key, Body=os.urandom(64 << 10))
    before = sum(object_gets(moto_log, bucket, key) for key in keys)
    cache_dir = tmp_path / "cache"
    procs, logs = [], []
    for name in ("a", "b"):
        logs.append(tmp_path / f"termination-{name}")
        env = base_env(tmp_path, s3_creds, KUBESERVE_TERMINATION_LOG=str(logs[-1]))
        args = ["s3://models/twins/", str(tmp_path / name), f"--cache-dir={cache_dir}"]
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "kubeserve.dataplane.storage", *args],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=RUN_TIMEOUT_S)
        finally:
            proc.kill()
        assert proc.returncode == 0, err
    states = sorted(termination_report(log)["cache"] for log in logs)
    assert states == ["hit", "miss"]
    assert sum(object_gets(moto_log, bucket, key) for key in keys) == before + len(keys)
    for key in keys:
        relative = key.removeprefix("twins/")
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()
    assert len(list((cache_dir / "v1" / "entries").iterdir())) == 1


def test_s3_model_bigger_than_the_cache_is_served_uncached(
    tmp_path: Path, bucket: Any, s3_creds: Path
) -> None:
    bucket.put_object(Bucket="models", Key="big/model.onnx", Body=b"b" * 4096)
    cache_dir = tmp_path / "cache"
    proc, got = cached_run(
        tmp_path, s3_creds, "s3://models/big/model.onnx", tmp_path / "p", cache_dir, "1k"
    )
    assert got["cache"] == "miss" and got["bytes"] == 4096
    assert "bigger than the cache" in proc.stderr
    assert (tmp_path / "p" / "model.onnx").stat().st_size == 4096
    assert not (cache_dir / "v1" / "entries").exists() or not any(
        (cache_dir / "v1" / "entries").iterdir()
    )


def test_report_without_cache_never_holds_the_uri(tmp_path: Path, http_server: HttpServer) -> None:
    (http_server.root / "resnet.onnx").write_bytes(b"m" * 1000)
    log = tmp_path / "termination-log"
    env = base_env(tmp_path, KUBESERVE_TERMINATION_LOG=str(log))
    url = http_server.url(f"resnet.onnx?X-Amz-Credential=abc&{SIGNATURE}")
    proc = run_cli(url, tmp_path / "m", "--runtime", "onnxruntime", env=env)
    assert proc.returncode == 0, proc.stderr
    text = log.read_text()
    assert "\n" not in text and len(text.encode()) < 4096
    assert set(json.loads(text)) == {"downloadSeconds", "bytes", "cache"}
    got = termination_report(log)
    assert got["cache"] == "off" and got["bytes"] == 1000 and got["downloadSeconds"] > 0
    assert "SIGNATURE" not in text and "127.0.0.1" not in text


def test_failed_run_writes_no_report(tmp_path: Path, http_server: HttpServer) -> None:
    log = tmp_path / "termination-log"
    env = base_env(tmp_path, KUBESERVE_TERMINATION_LOG=str(log))
    proc = run_cli(http_server.url("missing.onnx"), tmp_path / "m", env=env)
    assert proc.returncode == 3
    assert not log.exists()


def test_no_termination_log_dir_is_fine(tmp_path: Path, http_server: HttpServer) -> None:
    (http_server.root / "model.onnx").write_bytes(b"m")
    env = base_env(tmp_path, KUBESERVE_TERMINATION_LOG=str(tmp_path / "absent" / "log"))
    proc = run_cli(http_server.url("model.onnx"), tmp_path / "m", env=env)
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "absent").exists()


# --- local sources, layouts, DEST handling --------------------------------------------------


@pytest.mark.parametrize(
    ("runtime", "files", "message"),
    [
        (
            "onnxruntime",
            ["weights.bin"],
            "expected model.onnx at the top of the model directory; found: weights.bin",
        ),
        (
            "onnxruntime",
            ["a.onnx", "b.onnx"],
            "cannot choose between several .onnx files (a.onnx, b.onnx)",
        ),
        (
            "tfserving",
            ["saved_model.pb", "variables/variables.index"],
            "saved_model.pb is at the top",
        ),
        ("tfserving", ["latest/saved_model.pb"], "found: latest/ [saved_model.pb]"),
        ("torchserve", ["model.pt", "handler.py"], "expected at least one <model>.mar"),
    ],
)
def test_wrong_layout_refused_with_what_was_found(
    tmp_path: Path, runtime: str, files: list[str], message: str
) -> None:
    src = tmp_path / "src"
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(b"x")
    dest = tmp_path / "models"
    dest.mkdir()
    proc = run_cli(f"file://{src}", dest, "--runtime", runtime, env=base_env(tmp_path))
    assert proc.returncode == 4, proc.stderr
    assert message in error_line(proc)
    assert visible(dest) == []


def test_torchserve_model_name_must_match_when_ambiguous(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.mar").write_bytes(b"x")
    (src / "b.mar").write_bytes(b"x")
    proc = run_cli(
        src, tmp_path / "m", "--runtime", "torchserve", "--model-name", "c", env=base_env(tmp_path)
    )
    assert proc.returncode == 4
    assert "expected c.mar for model 'c'; found: a.mar, b.mar" in error_line(proc)


def test_dest_not_empty_is_refused_and_rerun_is_idempotent(tmp_path: Path) -> None:
    src = tmp_path / "model.onnx"
    src.write_bytes(b"m")
    dest = tmp_path / "models"
    dest.mkdir()
    (dest / "someone-elses.txt").write_text("keep me")
    proc = run_cli(src, dest, env=base_env(tmp_path))
    assert proc.returncode == 2
    assert "is not empty" in error_line(proc)
    assert (dest / "someone-elses.txt").read_text() == "keep me"

    dest2 = tmp_path / "models2"
    assert run_cli(src, dest2, env=base_env(tmp_path)).returncode == 0
    proc = run_cli(src, dest2, env=base_env(tmp_path))
    assert proc.returncode == 0
    assert "nothing to do" in proc.stderr


def test_interrupted_commit_is_cleared_and_redone(tmp_path: Path) -> None:
    src = tmp_path / "model.onnx"
    src.write_bytes(b"m")
    dest = tmp_path / "models"
    dest.mkdir()
    (dest / ".kubeserve-incomplete").touch()
    (dest / "half-moved.bin").write_bytes(b"x")
    (dest / ".kubeserve-staging-old").mkdir()
    proc = run_cli(src, dest, "--runtime", "onnxruntime", env=base_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert visible(dest) == [".kubeserve-storage.json", "model.onnx"]


@pytest.mark.parametrize(
    ("model_uri", "leak"),
    [
        ("https://user:hunter2-password@models.example.com/m.onnx", "hunter2-password"),
        ("s3://AKIAINURI:uri-secret-key@bucket/m.onnx", "uri-secret-key"),
        ("ftp://models.example.com/m.onnx", None),
        ("pvc://claim/path", None),
        ("https://models.example.com/dir/", None),
        ("s3://UPPER_bucket/x", None),
    ],
)
def test_invalid_uris_exit_2(tmp_path: Path, model_uri: str, leak: str | None) -> None:
    proc = run_cli(model_uri, tmp_path / "m", env=base_env(tmp_path))
    assert proc.returncode == 2, proc.stderr
    error_line(proc)
    if leak:
        assert_no_secret(proc, leak)
    assert not (tmp_path / "m").exists()


def test_usage_error_exit_2(tmp_path: Path) -> None:
    proc = run_cli("only-one-argument", env=base_env(tmp_path))
    assert proc.returncode == 2
    proc = run_cli("x", tmp_path / "m", "--runtime", "triton", env=base_env(tmp_path))
    assert proc.returncode == 2


# --- archives -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([tar_file("ok.onnx"), tar_file("../evil.onnx")], "'..'"),
        ([tar_file("/tmp/kubeserve-evil.onnx")], "absolute path"),
        ([tar_link("link", "/etc/passwd")], "absolute target"),
        ([tar_link("link", "../../outside")], "escapes the target"),
        ([tar_link("sub/link", "../../outside")], "escapes the target"),
        # A link that is fine alone, then written through: refused either way.
        ([tar_link("link", "."), tar_file("link/model.onnx")], "through a symlink"),
        # a -> c/.. is inside while c does not exist; c -> . then makes a escape.
        ([tar_link("a", "c/.."), tar_link("c", ".")], "escapes the target"),
        ([tar_link("hard", "../outside", tarfile.LNKTYPE)], "'..'"),
        ([tar_link("hard", "/etc/passwd", tarfile.LNKTYPE)], "absolute path"),
    ],
    ids=[
        "dotdot",
        "absolute",
        "symlink-abs",
        "symlink-up",
        "symlink-up-nested",
        "through-symlink",
        "symlink-chain",
        "hardlink-up",
        "hardlink-abs",
    ],
)
def test_unsafe_tar_refused(tmp_path: Path, members: list[Any], message: str) -> None:
    target = tmp_path / "deep" / "staging"
    target.mkdir(parents=True)
    path = make_tar(tmp_path / "m.tar.gz", members)
    with pytest.raises(ArchiveError, match=message):
        archive.unpack(path, target)
    assert not (tmp_path / "deep" / "evil.onnx").exists()
    assert not (tmp_path / "evil.onnx").exists()
    assert not Path("/tmp/kubeserve-evil.onnx").exists()


def test_unsafe_tar_via_cli_leaves_dest_empty(tmp_path: Path) -> None:
    path = make_tar(tmp_path / "m.tgz", [tar_file("model.onnx"), tar_file("../../evil.onnx")])
    dest = tmp_path / "a" / "models"
    dest.mkdir(parents=True)
    proc = run_cli(path, dest, "--runtime", "onnxruntime", env=base_env(tmp_path))
    assert proc.returncode == 4
    assert "'..'" in error_line(proc)
    assert visible(dest) == []
    assert not (tmp_path / "evil.onnx").exists()


def test_unsafe_zip_via_cli(tmp_path: Path) -> None:
    path = tmp_path / "m.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model.onnx", b"m")
        zf.writestr("../evil.onnx", b"x")
    dest = tmp_path / "a" / "models"
    proc = run_cli(path, dest, env=base_env(tmp_path))
    assert proc.returncode == 4
    assert "'..'" in error_line(proc)
    assert not dest.exists()
    assert not (tmp_path / "a" / "evil.onnx").exists()


def test_zip_absolute_and_symlink_refused(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    path = tmp_path / "abs.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("/abs.onnx", b"x")
    with pytest.raises(ArchiveError, match="absolute path"):
        archive.unpack(path, target)
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = (0o120777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="symlink"):
        archive.unpack(path, target)


def test_safe_tar_with_inner_links_unpacks(tmp_path: Path) -> None:
    target = tmp_path / "t"
    target.mkdir()
    path = make_tar(
        tmp_path / "m.tgz",
        [
            tar_file("export/1/saved_model.pb", b"pb"),
            tar_link("export/latest", "1"),
            tar_link("export/copy.pb", "export/1/saved_model.pb", tarfile.LNKTYPE),
        ],
    )
    assert archive.unpack(path, target) == 2
    assert (target / "export" / "latest" / "saved_model.pb").read_bytes() == b"pb"
    assert (target / "export" / "copy.pb").read_bytes() == b"pb"


def test_corrupt_archive(tmp_path: Path) -> None:
    path = tmp_path / "m.tar.gz"
    path.write_bytes(b"not a tarball")
    with pytest.raises(ArchiveError, match="not a valid archive"):
        archive.unpack(path, tmp_path)


# --- pure pieces: URIs, credentials, layout -------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "redacted"),
    [
        ("s3://bucket/prefix/", "s3://bucket/prefix/"),
        ("gs://bucket/m.onnx", "gs://bucket/m.onnx"),
        ("https://h.example:8443/m.onnx?sig=abc#frag", "https://h.example:8443/m.onnx?REDACTED"),
        ("file:///models/x", "file:///models/x"),
        ("/models/x", "file:///models/x"),
    ],
)
def test_uri_redaction(raw: str, redacted: str) -> None:
    assert uri.parse(raw).redacted == redacted


def test_redact_any_string() -> None:
    assert uri.redact("https://u:p@h/x?q=1") == "https://h/x?REDACTED"


def test_credentials_precedence(tmp_path: Path) -> None:
    (tmp_path / "AWS_ACCESS_KEY_ID").write_text("file-id")
    (tmp_path / "AWS_SECRET_ACCESS_KEY").write_text("file-secret")
    (tmp_path / "AWS_DEFAULT_REGION").write_text("eu-west-1")
    (tmp_path / "service-account.json").write_text('{"type": "service_account"}\n')
    creds = credentials.load({"AWS_SECRET_ACCESS_KEY": "env-secret-only"}, tmp_path)
    # A lone env secret does not pair with the file's key id: the pair comes from one source.
    assert creds.aws_access_key_id is not None
    assert creds.aws_access_key_id.reveal() == "file-id"
    assert creds.aws_secret_access_key is not None
    assert creds.aws_secret_access_key.reveal() == "file-secret"
    assert creds.aws_region == "eu-west-1"
    assert creds.google_service_account_json is not None
    assert "***" in repr(creds) and "file-secret" not in repr(creds)
    env = {
        "AWS_ACCESS_KEY_ID": "env-id",
        "AWS_SECRET_ACCESS_KEY": "env-secret",
        "AWS_REGION": "us-west-2",
    }
    creds = credentials.load(env, tmp_path)
    assert creds.aws_secret_access_key is not None
    assert creds.aws_secret_access_key.reveal() == "env-secret"
    assert creds.aws_region == "us-west-2"
    assert credentials.load({}, tmp_path / "missing").describe() == "none"


def test_layout_unknown_runtime(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="unknown runtime"):
        check(tmp_path, "triton")


def test_uri_refuses_dot_segments() -> None:
    with pytest.raises(UsageError):
        uri.parse("s3://bucket/a/../b")


def test_gcs_service_account_json_must_be_json_and_is_never_echoed(tmp_path: Path) -> None:
    # No GCS emulator is available here: this checks the credential handling in front of gcsfs.
    creds = tmp_path / "secret"
    creds.mkdir()
    (creds / "service-account.json").write_text("not-json PRIVATE-KEY-MATERIAL")
    proc = run_cli("gs://models/m.onnx", tmp_path / "m", env=base_env(tmp_path, creds))
    assert proc.returncode == 2
    assert "not valid JSON" in error_line(proc)
    assert "GOOGLE_APPLICATION_CREDENTIALS_JSON (file)" in proc.stderr
    assert_no_secret(proc, "PRIVATE-KEY-MATERIAL")
