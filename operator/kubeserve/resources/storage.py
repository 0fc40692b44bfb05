"""How the model reaches the server: a read-only PVC mount, or an init container download.

With a model cache (spec.model.cache, or the operator's cluster-wide claim), only the init
container mounts the cache claim, read-write: it fills the cache on a miss and copies the model
from it into the pod's own model volume, which the server mounts read-only as without a cache.
The server never reads the cache itself: the entry's name is known only at run time (it hashes
the object's ETag), so no subPath could select it, and a copy cannot be evicted from under a
running server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..api import InvalidSpec, ModelDeployment
from ..runtimes.base import MODEL_DIR
from .security import container_security_context

MODEL_VOLUME = "model"
CREDENTIALS_VOLUME = "storage-credentials"
CACHE_VOLUME = "model-cache"
CACHE_DIR = "/mnt/kubeserve-cache"
CREDENTIALS_DIR = "/var/run/secrets/kubeserve/storage"
INIT_CONTAINER = "storage-initializer"


@dataclass(frozen=True)
class ModelStorage:
    volumes: list[dict[str, Any]]
    server_mounts: list[dict[str, Any]]
    init_containers: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ModelCacheSettings:
    """The operator's cluster-wide model cache (config.OperatorConfig); claim "" means none."""

    claim: str = ""
    max_size: str = "50Gi"


def cache_for(md: ModelDeployment, default: ModelCacheSettings) -> ModelCacheSettings | None:
    """The cache this model's initializer uses, or None. Raises InvalidSpec if none can be."""
    wanted = md.spec.model.cache
    if md.spec.model.scheme == "pvc" or (wanted is not None and not wanted.enabled):
        return None
    if wanted is None:
        return default if default.claim else None
    claim = wanted.claim_name or default.claim
    if not claim:
        raise InvalidSpec(
            "spec.model.cache.claimName",
            "the operator has no cluster-wide model cache: name a PersistentVolumeClaim here, "
            "or remove spec.model.cache",
        )
    return ModelCacheSettings(claim, str(wanted.max_size or default.max_size))


def model_storage(
    md: ModelDeployment,
    *,
    initializer_image: str,
    pull_policy: str,
    cache: ModelCacheSettings | None = None,
) -> ModelStorage:
    """``cache``: the operator's cluster-wide model cache settings (default: none)."""
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
    args = [uri, MODEL_DIR, f"--runtime={md.spec.runtime.value}", f"--model-name={md.model_name}"]
    use = cache_for(md, cache or ModelCacheSettings())
    if use is not None:
        volumes.append({"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": use.claim}})
        init_mounts.append({"name": CACHE_VOLUME, "mountPath": CACHE_DIR})
        args += [f"--cache-dir={CACHE_DIR}", f"--cache-max-size={use.max_size}"]
    init = {
        "name": INIT_CONTAINER,
        "image": initializer_image,
        "imagePullPolicy": pull_policy,
        "args": args,
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
