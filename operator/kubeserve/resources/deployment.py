"""The Deployment that runs the model server."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import cpu
from ..api import ModelDeployment, RolloutStrategy, _quantity
from ..config import OperatorConfig
from ..runtimes import runtime_for
from ..runtimes.base import CONFIG_DIR, BuildContext
from . import gpu as gpu_rules
from .configmap import CONFIG_HASH_ANNOTATION, config_hash
from .labels import STABLE, TRACK_LABEL, metadata, pod_labels, selector_labels
from .names import child_name
from .security import container_security_context, pod_security_context
from .storage import ModelCacheSettings, model_storage

# KServe's defaults: enough for a small model, and HPA utilization needs requests.
DEFAULT_RESOURCES = {"cpu": "1", "memory": "2Gi"}
CONFIG_VOLUME = "config"
# A terminating pod leaves the Service's endpoints, and then every kube-proxy, ingress and
# mesh proxy, a few seconds after the kubelet sends SIGTERM: without a pause, new
# connections meet a closed port during every rollout, scale-down and node drain. The
# kubelet's own sleep action (Kubernetes 1.30+, our floor) needs no sleep binary in the
# image. Long enough for endpoints to propagate, short because with a GPU it delays every
# step of a rollout (the old pod holds its GPU until it is gone).
PRE_STOP_SLEEP_SECONDS = 5
# SIGKILL comes this long after the pod starts terminating, preStop sleep included: the
# sleep, then the server's drain (our ONNX Runtime server: up to 2 x 10 s, see its
# ServerOptions.shutdown_timeout_s; TorchServe and TF Serving: see their runtime modules).
TERMINATION_GRACE_SECONDS = 30


def build_context(md: ModelDeployment, cfg: OperatorConfig) -> BuildContext:
    gpu = md.spec.gpu is not None
    return BuildContext(
        image=md.spec.image or cfg.image(md.spec.runtime, gpu),
        gpu=gpu,
        image_pull_policy=cfg.image_pull_policy,
        cpu_budget=cpu_budget(md),
    )


def cpu_budget(md: ModelDeployment) -> int | None:
    """The server's CPU limit in whole CPUs, rounded up; None without one (the defaults set
    none: see _resources). The runtimes size their thread pools to it (kubeserve.cpu)."""
    limits = md.spec.resources.limits if md.spec.resources else None
    if not limits or "cpu" not in limits:
        return None
    return cpu.cpus_from_cores(float(_quantity(limits["cpu"])))


def deployment(
    md: ModelDeployment, cfg: OperatorConfig, *, config: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``config``: the ConfigMap the servers read (render makes it), mounted and hashed."""
    template_meta: dict[str, Any] = {"labels": pod_labels(md)}
    if md.spec.gateway is not None or cfg.gateway is not None:
        # The Gateway's stable-only Service selects these pods; a Service cannot exclude
        # the canary's any other way. Only here, so that an operator upgrade changes no
        # template (and restarts no pod) of a ModelDeployment without a Gateway.
        template_meta["labels"][TRACK_LABEL] = STABLE
    config_map = config["metadata"]["name"] if config else None
    if config:
        template_meta["annotations"] = {CONFIG_HASH_ANNOTATION: config_hash(config["data"])}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(md)},
        "strategy": strategy(md),
        "revisionHistoryLimit": 3,
        "template": {
            "metadata": template_meta,
            "spec": pod_spec(md, cfg, config_map=config_map),
        },
    }
    if md.spec.autoscaling is None:
        # With an autoscaler, replicas belong to it: leaving the field out of our apply
        # means server-side apply never fights the autoscaler over it.
        spec["replicas"] = md.spec.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(md, child_name(md.name)),
        "spec": spec,
    }


def strategy(md: ModelDeployment) -> dict[str, Any]:
    """The Deployment strategy; with a GPU, one that never needs a spare GPU.

    A default rolling update surges one new pod before removing an old one: with GPUs that
    surge pod needs a free GPU, which a right-sized GPU pool does not have, so the rollout
    hangs with the new pod Pending. With a GPU the default is maxSurge 0 / maxUnavailable 1
    (replace pods one at a time in place), or Recreate for a fixed single replica.
    spec.rollout overrides; when it sets only one of the two numbers, the other is chosen
    so the pair stays valid and keeps the intent (maxSurge > 0 means "I have a spare GPU":
    then nothing needs to go down first, maxUnavailable 0).
    """
    rollout = md.spec.rollout
    gpu = md.spec.gpu is not None
    zero = ("0", "0%")
    if rollout and rollout.strategy == RolloutStrategy.RECREATE:
        return {"type": "Recreate"}
    if gpu and rollout is None and md.spec.autoscaling is None and md.spec.replicas <= 1:
        # One GPU replica: a surge pod would wait forever for a second GPU.
        return {"type": "Recreate"}
    surge = rollout.max_surge if rollout else None
    unavailable = rollout.max_unavailable if rollout else None
    if not gpu:
        surge = "25%" if surge is None else surge
        unavailable = "25%" if unavailable is None else unavailable
    elif surge is None and unavailable is None:
        surge, unavailable = 0, 1
    elif surge is None:
        surge = 1 if str(unavailable) in zero else 0
    elif unavailable is None:
        unavailable = 1 if str(surge) in zero else 0
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable},
    }


def pod_spec(md: ModelDeployment, cfg: OperatorConfig, *, config_map: str | None) -> dict[str, Any]:
    ctx = build_context(md, cfg)
    runtime = runtime_for(md.spec.runtime)
    storage = model_storage(
        md,
        initializer_image=cfg.storage_initializer_image,
        pull_policy=cfg.image_pull_policy,
        cache=ModelCacheSettings(cfg.model_cache_claim, cfg.model_cache_max_size),
    )
    volumes = [*storage.volumes, {"name": "tmp", "emptyDir": {}}]
    mounts = [*storage.server_mounts, {"name": "tmp", "mountPath": "/tmp"}]
    if config_map:
        volumes.append({"name": CONFIG_VOLUME, "configMap": {"name": config_map}})
        mounts.append({"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True})

    server = runtime.container(md, ctx)
    server["env"] = _merge_env(server.get("env", []), md)
    server["resources"] = _resources(md)
    server["volumeMounts"] = mounts
    server["securityContext"] = container_security_context()
    server["lifecycle"] = {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}}

    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "containers": [server],
        "volumes": volumes,
    }
    if storage.init_containers:
        pod["initContainers"] = storage.init_containers
    if md.spec.node_selector:
        pod["nodeSelector"] = dict(md.spec.node_selector)
    affinity = gpu_rules.affinity(md, cfg)
    if affinity:
        pod["affinity"] = affinity
    tolerations = gpu_rules.tolerations(md, cfg)
    if tolerations:
        pod["tolerations"] = tolerations
    if md.spec.gpu and md.spec.gpu.runtime_class_name:
        pod["runtimeClassName"] = md.spec.gpu.runtime_class_name
    return pod


def _merge_env(defaults: list[dict[str, Any]], md: ModelDeployment) -> list[dict[str, Any]]:
    # The env list is keyed by name under server-side apply: duplicates are an error there.
    merged: dict[str, dict[str, Any]] = {e["name"]: e for e in defaults}
    for var in md.spec.env or []:
        merged[var.name] = var.model_dump(by_alias=True, exclude_none=True)
    return list(merged.values())


def _resources(md: ModelDeployment) -> dict[str, Any]:
    user = md.spec.resources
    requests: dict[str, Any] = dict(DEFAULT_RESOURCES)
    limits: dict[str, Any] = {}
    if user is not None:
        requests = {k: str(v) for k, v in (user.requests or {}).items()} or (
            {k: str(v) for k, v in (user.limits or {}).items()}
        )
        limits = {k: str(v) for k, v in (user.limits or {}).items()}
    else:
        limits = {"memory": DEFAULT_RESOURCES["memory"]}
    if md.spec.gpu:
        devices = gpu_rules.gpu_resources(md.spec.gpu)
        requests.update(devices)
        limits.update(devices)
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return resources


def config_map_data(md: ModelDeployment, cfg: OperatorConfig) -> Mapping[str, str]:
    return runtime_for(md.spec.runtime).config_files(md, build_context(md, cfg))
