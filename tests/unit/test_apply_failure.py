"""A refused Deployment apply leaves its selector-bearing siblings alone (issue 17, defect 2).

When Kubernetes refuses the Deployment (an immutable field, a webhook), re-pointing the
Service, PDB and NetworkPolicy at pods that will never exist would cut off the pods that
serve now. The status reports the Deployment that runs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kubeserve.config import OperatorConfig
from kubeserve.kube import ApiError
from kubeserve.reconcile import ChildCache, reconcile

UID = "0000-md"


def body() -> dict[str, Any]:
    return {
        "apiVersion": "kubeserve.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m", "namespace": "ml", "uid": UID, "generation": 2},
        "spec": {
            "runtime": "onnxruntime",
            "model": {"uri": "s3://models/m/"},
            "replicas": 2,
            "networkPolicy": {"enabled": True},
        },
    }


RUNNING = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "m", "namespace": "ml", "generation": 1,
                 "ownerReferences": [{"kind": "ModelDeployment", "uid": UID, "controller": True}]},
    "spec": {"replicas": 2},
    "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
               "readyReplicas": 2, "availableReplicas": 2},
}  # fmt: skip


class RefusesDeployments:
    """An API whose server refuses every Deployment apply, as for an immutable selector."""

    def __init__(self) -> None:
        self.applied: list[str] = []

    async def get(self, api_version: str, plural: str, namespace: str, name: str) -> Any:
        return RUNNING if plural == "deployments" else None

    async def apply(self, obj: dict[str, Any], plural: str, **_: Any) -> dict[str, Any]:
        if obj["kind"] == "Deployment":
            raise ApiError(422, 'Deployment.apps "m" is invalid: spec.selector: field is immutable')
        self.applied.append(obj["kind"])
        return obj

    async def delete(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing is pruned here")

    async def api_available(self, api_version: str) -> bool:
        return True


def test_a_refused_deployment_keeps_its_siblings_and_reports_the_running_one() -> None:
    kube = RefusesDeployments()
    result = asyncio.run(reconcile(body(), kube, OperatorConfig(), cache=ChildCache()))  # type: ignore[arg-type]
    assert not {"Service", "PodDisruptionBudget", "NetworkPolicy"} & set(kube.applied)
    ready = next(c for c in result.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ApplyRejected")
    assert "immutable" in ready["message"]
    assert (result.status["replicas"], result.status["readyReplicas"]) == (2, 2)
