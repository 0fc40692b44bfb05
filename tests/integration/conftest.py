"""Run the real kopf operator against kmock, inside the test's own event loop."""

from __future__ import annotations

from typing import Any

import pytest
from kmock_harness import MD_RESOURCE, Api, ApplyingEmulator

from kubeserve import api


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.kmock(cls=ApplyingEmulator))
            item.add_marker(pytest.mark.looptime)


@pytest.fixture(autouse=True)
def _declare_resources(kmock: Any) -> None:
    kmock.resources.load_bundled()
    kmock.resources[MD_RESOURCE] = kmock.ResourceInfo(
        kind=api.KIND,
        namespaced=True,
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
        subresources={"status"},
    )


@pytest.fixture
def kube_api(kmock: Any) -> Api:
    return Api(str(kmock.url))
