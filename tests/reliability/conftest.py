"""The reliability suite: fuzzing, faults, restarts, drift, ownership, secrets, observability.

It reuses the integration harness (tests/integration/kmock_harness.py) and the CRD validator
(tests/unit/crd_validator.py); both folders are put on sys.path here, so this suite runs on
its own: ``.venv/bin/python -m pytest tests/reliability``.

Tests that run the operator are marked ``kmock`` in their module (``pytestmark``); they get
the fault-injecting emulator, looptime (fake time: backoffs and timers cost no wall time)
and the API resources declared, as in tests/integration.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

_TESTS = Path(__file__).resolve().parents[1]
for _folder in ("integration", "unit"):
    if str(_TESTS / _folder) not in sys.path:
        sys.path.insert(0, str(_TESTS / _folder))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reliability: the reliability suite (tests/reliability, issue 6)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/reliability" in str(item.fspath):
            item.add_marker(pytest.mark.reliability)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from rel_settings import BOUNDS, FIGURES

    if not FIGURES and not BOUNDS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("reliability figures")
    for name, value in sorted(FIGURES.items()):
        write(f"{name}: {value:g}")
    for name, (observed, limit) in sorted(BOUNDS.items()):
        write(f"{name}: {observed:g} (bound {limit:g})")


@pytest.fixture
def cluster(kmock: Any) -> Any:
    """kmock with the built-in resources and our CRD declared (like tests/integration)."""
    from kmock_harness import MD_RESOURCE

    from kubeserve import api

    kmock.resources.load_bundled()
    kmock.resources[MD_RESOURCE] = kmock.ResourceInfo(
        kind=api.KIND,
        namespaced=True,
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        subresources={"status"},
    )
    return kmock
