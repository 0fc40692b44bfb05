"""How the model reaches the server: a read-only PVC mount, or an init container download."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..api import InvalidSpec, ModelDeployment
from ..runtimes.base import MODEL_DIR
from .security import container_security_context

MODEL_VOLUME = "model"
CREDENTIALS_VOLUME = "storage-credentials"
CREDENTIALS_DIR = "/var/run/secrets/kubeserve/storage"
INIT_CONTAINER = "storage-initializer"


@dataclass(frozen=True)
class ModelStorage:
    volumes: list[dict[str, Any]]
    server_mounts: list[dict[str, Any]]
    init_containers: list[dict[str, Any]] = field(default_factory=list)


def model_storage(md: ModelDeployment, *, initializer_image: str, pull_policy: str) -> ModelStorage:
    uri = md.spec.model.uri
    scheme = md.spec.model.scheme
    if scheme == "pvc":
        claim, _, sub_path = uri.removeprefix("pvc://").partition("/")
        mount: dict[str, Any] = {"name": MODEL_VOLUME, "mountPath": MODEL_DIR, "readOnly": True}
        if sub_path.strip("/"):
            mount["subPath"] = sub_path.strip("/")
        return ModelStorage(
            volumes=[
                {
                    "name": MODEL_VOLUME,
                    "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
                }
            ],
            server_mounts=[mount],
        )
    if scheme not in {"s3", "gs", "https"}:
        raise InvalidSpec(
            "spec.model.uri", f"{scheme}:// works only with `kubeserve serve`, not in a cluster"
        )
    volumes: list[dict[str, Any]] = [{"name": MODEL_VOLUME, "emptyDir": {}}]
    init_mounts = [{"name": MODEL_VOLUME, "mountPath": MODEL_DIR}, _tmp_mount()]
    secret = md.spec.model.credentials_secret
    if secret:
        volumes.append(
            {"name": CREDENTIALS_VOLUME, "secret": {"secretName": secret, "defaultMode": 0o440}}
        )
        init_mounts.append(
            {"name": CREDENTIALS_VOLUME, "mountPath": CREDENTIALS_DIR, "readOnly": True}
        )
    init = {
        "name": INIT_CONTAINER,
        "image": initializer_image,
        "imagePullPolicy": pull_policy,
        "args": [
            uri,
            MODEL_DIR,
            f"--runtime={md.spec.runtime.value}",
            f"--model-name={md.model_name}",
        ],
        "env": [{"name": "KUBESERVE_CREDENTIALS_DIR", "value": CREDENTIALS_DIR}],
        "volumeMounts": init_mounts,
        "securityContext": container_security_context(),
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
    }
    return ModelStorage(
        volumes=volumes,
        server_mounts=[{"name": MODEL_VOLUME, "mountPath": MODEL_DIR, "readOnly": True}],
        init_containers=[init],
    )


def _tmp_mount() -> dict[str, Any]:
    return {"name": "tmp", "mountPath": "/tmp"}
