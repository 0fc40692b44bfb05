"""A real Prometheus for tests, the servers it scrapes, and the load that gives them numbers.

- ``Prometheus``: Debian's ``prometheus`` binary on 127.0.0.1 with a scrape config written per
  run; each target gets the ``namespace`` and ``pod`` labels a cluster's pod discovery gives it.
- ``RecordedScrape``: serves a hand-written scrape of a server that cannot run here (TF
  Serving, dcgm-exporter). Counters grow in proportion to the time since it started, so a
  rate over them has a known true value: the recorded value / ``RECORDED_SECONDS``.
- ``Load``: closed-loop clients over keep-alive connections. It measures the truth the
  queries are judged against: requests per second and the mean number in flight.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from envtest import free_port
from kubeapi import eventually

PROMETHEUS = shutil.which("prometheus")
SCRAPE_INTERVAL_S = 1
# A recorded scrape's counters are what the server had counted after this long.
RECORDED_SECONDS = 100.0


@dataclass(frozen=True)
class Target:
    job: str
    address: str  # host:port
    metrics_path: str
    labels: dict[str, str] = field(default_factory=dict)
    honor_labels: bool = False  # an exporter that labels series with pods itself

    def scrape_config(self) -> dict[str, Any]:
        return {
            "job_name": self.job,
            "metrics_path": self.metrics_path,
            "honor_labels": self.honor_labels,
            "static_configs": [{"targets": [self.address], "labels": self.labels}],
        }


class Prometheus:
    def __init__(self, workdir: Path, targets: list[Target]) -> None:
        assert PROMETHEUS, "prometheus is not installed (apt-get install prometheus)"
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {
                        "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                        "scrape_timeout": f"{SCRAPE_INTERVAL_S}s",
                    },
                    "scrape_configs": [t.scrape_config() for t in targets],
                }
            )
        )
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}",
                 f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address={self.url.removeprefix('http://')}",
                 "--log.level=warn"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        eventually(self._ready, timeout=60, what="prometheus /-/ready")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/PATH; a query Prometheus refuses (syntax, types) fails the test."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"prometheus refused {params}: {exc.read().decode()}") from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """An instant query (now, or at unix time ``at``): (labels, value) per series."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self.api("query", **params)
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        assert data["resultType"] == "vector", data
        return [(item["metric"], float(item["value"][1])) for item in data["result"]]

    def targets_up(self) -> dict[str, str]:
        return {
            t["labels"]["job"] + "/" + t["scrapeUrl"]: t["health"]
            for t in self.api("targets")["activeTargets"]
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


class RecordedScrape:
    """An HTTP /metrics endpoint replaying a recorded scrape, counters growing with time."""

    def __init__(self, text: str) -> None:
        self.families = _sample_types(text)
        self.text = text
        self.started = time.monotonic()
        scrape = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = scrape.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def render(self) -> str:
        scale = (time.monotonic() - self.started) / RECORDED_SECONDS
        lines = []
        for line in self.text.splitlines():
            if line and not line.startswith("#"):
                series, value = line.rsplit(" ", 1)
                name = series.split("{", 1)[0]
                if self.families.get(name) in {"counter", "histogram", "summary"}:
                    line = f"{series} {float(value) * scale:.6f}"
            lines.append(line)
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _sample_types(text: str) -> dict[str, str]:
    """Sample name -> its family's type (histogram samples: _bucket, _sum, _count)."""
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            if kind in {"histogram", "summary"}:
                for suffix in ("_bucket", "_sum", "_count"):
                    types[name + suffix] = kind
    return types


@dataclass
class Measured:
    """What the clients saw over the measured window."""

    requests: int = 0
    failures: int = 0
    latency_sum: float = 0.0  # seconds, summed over requests
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def concurrency(self) -> float:
        """Little's law on the client side: latency-seconds per second."""
        return self.latency_sum / self.seconds


@dataclass(frozen=True)
class JsonPost:
    """One request a client repeats: POST ``body`` to ``url``, expecting a 200."""

    url: str
    body: Any

    def connect(self) -> http.client.HTTPConnection:
        parsed = urllib.parse.urlsplit(self.url)
        return http.client.HTTPConnection(parsed.hostname or "", parsed.port, timeout=30)

    def send(self, connection: http.client.HTTPConnection, payload: bytes) -> None:
        path = urllib.parse.urlsplit(self.url).path
        connection.request("POST", path, payload, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise http.client.HTTPException(f"{self.url}: HTTP {response.status}")


class Load:
    """Closed-loop clients, several per target, all over the same bounded window."""

    def __init__(self) -> None:
        self.plans: list[tuple[str, int, JsonPost]] = []
        self.measured: dict[str, Measured] = {}

    def add(self, name: str, clients: int, request: JsonPost) -> None:
        self.plans.append((name, clients, request))
        self.measured[name] = Measured()

    def run(self, seconds: float) -> None:
        lock = threading.Lock()
        stop_at = time.monotonic() + seconds

        def client(record: Measured, request: JsonPost) -> None:
            payload = json.dumps(request.body).encode()
            connection: http.client.HTTPConnection | None = None
            while time.monotonic() < stop_at:
                started = time.monotonic()
                try:
                    connection = connection or request.connect()
                    request.send(connection, payload)
                    ok = True
                except (OSError, http.client.HTTPException):
                    ok = False
                    if connection is not None:
                        connection.close()
                    connection = None
                elapsed = time.monotonic() - started
                with lock:
                    record.requests += ok
                    record.failures += not ok
                    record.latency_sum += elapsed
            if connection is not None:
                connection.close()

        threads = [
            threading.Thread(target=client, args=(self.measured[name], request), daemon=True)
            for name, clients, request in self.plans
            for _ in range(clients)
        ]
        began = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + 60)
        assert not any(t.is_alive() for t in threads), "a load client hung"
        for record in self.measured.values():
            record.seconds = time.monotonic() - began


@contextlib.contextmanager
def prometheus(workdir: Path, targets: list[Target]) -> Iterator[Prometheus]:
    server = Prometheus(workdir, targets)
    try:
        yield server
    finally:
        server.stop()
