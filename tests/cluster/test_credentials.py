"""The operator logs in with any kubeconfig kubectl accepts, against a real API server.

Each form runs in a process of its own: the kubernetes client reads $KUBECONFIG when it is
imported, as it does in the operator's own process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster_env import (
    OPERATOR_NAMESPACE,
    SERVICE_ACCOUNT,
    Operator,
    model_deployment,
    ready_at_generation,
)
from e2elib import Kube as Tools
from envtest import ControlPlane, kubeconfig
from kubeapi import Kube

# Logs in as the operator does, then asks for an API group that only an authenticated user
# may discover: prints True, or fails with the API server's answer.
LOGIN = textwrap.dedent(
    """
    import asyncio, logging, kopf
    from kubeserve import credentials
    from kubeserve.kube import KubeClient

    async def main():
        info = await credentials.login(
            logger=logging.getLogger(), settings=kopf.OperatorSettings()
        )
        kube = KubeClient(info)
        try:
            print(await kube.api_available("apps/v1"))
        finally:
            await kube.close()

    asyncio.run(main())
    """
)


def login_with(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "KUBECONFIG": str(path)}
    return subprocess.run(
        [sys.executable, "-c", LOGIN], capture_output=True, text=True, env=env, timeout=60
    )


def token(tools: Tools, *extra: str) -> str:
    args = ["create", "token", SERVICE_ACCOUNT, "-n", OPERATOR_NAMESPACE, *extra]
    return tools.kubectl(*args).stdout.strip()


def test_embedded_certificate_data(control_plane: ControlPlane, tmp_path: Path) -> None:
    # kind's, EKS' and GKE's kubeconfigs embed the CA as base64; it used to reach ssl as is.
    config = yaml.safe_load(control_plane.admin_kubeconfig.read_text())
    assert "certificate-authority-data" in config["clusters"][0]["cluster"]
    result = login_with(config, tmp_path)
    assert result.stdout.strip() == "True", result.stderr


def test_file_paths(control_plane: ControlPlane, tmp_path: Path) -> None:
    config = kubeconfig(control_plane.url, control_plane.ca.pair.cert, user={
        "client-certificate": str(control_plane.admin.cert),
        "client-key": str(control_plane.admin.key),
    })  # fmt: skip
    cluster = config["clusters"][0]["cluster"]
    del cluster["certificate-authority-data"]
    cluster["certificate-authority"] = str(control_plane.ca.pair.cert)
    result = login_with(config, tmp_path)
    assert result.stdout.strip() == "True", result.stderr


def test_a_token_and_a_token_file(
    control_plane: ControlPlane, installed: Tools, tmp_path: Path
) -> None:
    value = token(installed)
    inline = kubeconfig(control_plane.url, control_plane.ca.pair.cert, user={"token": value})
    assert login_with(inline, tmp_path).stdout.strip() == "True"
    (tmp_path / "token").write_text(value)
    from_file = kubeconfig(
        control_plane.url, control_plane.ca.pair.cert, user={"tokenFile": str(tmp_path / "token")}
    )
    assert login_with(from_file, tmp_path).stdout.strip() == "True"
    # A token the API server does not know is refused: the check above can fail.
    bad = kubeconfig(control_plane.url, control_plane.ca.pair.cert, user={"token": "x" * 40})
    result = login_with(bad, tmp_path)
    assert result.returncode != 0 and "401" in result.stderr


def exec_plugin(tmp_path: Path, token_file: Path) -> dict[str, Any]:
    """An exec credential plugin, as EKS (aws eks get-token) and GKE use them."""
    plugin = tmp_path / "get-token.py"
    plugin.write_text(textwrap.dedent(f"""
        import json, pathlib
        token = pathlib.Path({str(token_file)!r}).read_text().strip()
        print(json.dumps({{
            "apiVersion": "client.authentication.k8s.io/v1",
            "kind": "ExecCredential",
            "status": {{"token": token}},
        }}))
    """))  # fmt: skip
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin)],
            "interactiveMode": "Never",
        }
    }


def test_an_exec_credential_plugin(
    control_plane: ControlPlane, installed: Tools, tmp_path: Path
) -> None:
    (tmp_path / "token").write_text(token(installed))
    user = exec_plugin(tmp_path, tmp_path / "token")
    config = kubeconfig(control_plane.url, control_plane.ca.pair.cert, user=user)
    result = login_with(config, tmp_path)
    assert result.stdout.strip() == "True", result.stderr


@pytest.mark.usefixtures("session_operator_paused", "scheduler")
def test_the_operator_logs_in_again_after_its_token_is_revoked(
    control_plane: ControlPlane,
    installed: Tools,
    kube: Kube,
    namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A rotated token and an API-server restart: kopf asks for credentials again on the 401."""
    workdir = tmp_path_factory.mktemp("rotation")
    token_file = workdir / "token"

    def bound_token(secret: str) -> str:
        kube.create(
            {"apiVersion": "v1", "kind": "Secret",
             "metadata": {"name": secret, "namespace": OPERATOR_NAMESPACE}},
            "secrets",
        )  # fmt: skip
        return token(installed, "--bound-object-kind=Secret", f"--bound-object-name={secret}")

    token_file.write_text(bound_token("rotation-1"))
    config = kubeconfig(
        control_plane.url, control_plane.ca.pair.cert, user=exec_plugin(workdir, token_file)
    )
    path = workdir / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    running = Operator(path, workdir)
    running.start()
    try:
        installed.apply(model_deployment("before", namespace))
        ready_at_generation(kube, namespace, "before")
        # Rotation: a new token is handed out, and the old one dies with its bound Secret.
        token_file.write_text(bound_token("rotation-2"))
        kube.delete("v1", "secrets", OPERATOR_NAMESPACE, "rotation-1")
        control_plane.restart_apiserver()
        installed.apply(model_deployment("after", namespace))
        ready_at_generation(kube, namespace, "after", timeout=90)
        assert running.popen is not None and running.popen.poll() is None
        assert "Ran out of valid credentials" not in running.log_text()
    finally:
        running.stop(signal.SIGTERM)
        kube.delete("v1", "secrets", OPERATOR_NAMESPACE, "rotation-2")
