"""Operator settings, read once from environment variables (the Helm chart sets them).

Every variable is listed in ``ENV_VARS`` with its default, so the chart, the docs and a test
can check they agree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from . import __version__
from .api import CACHE_SIZE_PATTERN, DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN, Runtime

IMAGE_REPOSITORY = "kubeserve"


def _default_image(component: str, gpu: bool = False) -> str:
    return f"{IMAGE_REPOSITORY}/{component}:{__version__}{'-gpu' if gpu else ''}"


# Name -> default. The chart passes each of these (charts/kubeserve/templates/deployment.yaml).
ENV_VARS: dict[str, str] = {
    "KUBESERVE_IMAGE_TFSERVING": _default_image("tfserving"),
    "KUBESERVE_IMAGE_TFSERVING_GPU": _default_image("tfserving", gpu=True),
    "KUBESERVE_IMAGE_TORCHSERVE": _default_image("torchserve"),
    "KUBESERVE_IMAGE_TORCHSERVE_GPU": _default_image("torchserve"),
    "KUBESERVE_IMAGE_ONNXRUNTIME": _default_image("onnxruntime"),
    "KUBESERVE_IMAGE_ONNXRUNTIME_GPU": _default_image("onnxruntime", gpu=True),
    "KUBESERVE_IMAGE_STORAGE_INITIALIZER": _default_image("storage-initializer"),
    "KUBESERVE_IMAGE_PULL_POLICY": "IfNotPresent",
    "KUBESERVE_GPU_PRODUCT_LABEL": "nvidia.com/gpu.product",
    "KUBESERVE_GPU_MEMORY_LABEL": "nvidia.com/gpu.memory",
    "KUBESERVE_GPU_TAINT_KEY": "nvidia.com/gpu",
    "KUBESERVE_PROMETHEUS_URL": "http://prometheus-operated.monitoring.svc:9090",
    "KUBESERVE_CLUSTER_DOMAIN": "cluster.local",
    "KUBESERVE_RESYNC_SECONDS": "300",
    "KUBESERVE_FIELD_MANAGER": "kubeserve",
    # The cluster-wide model cache (docs/coldstart.md): a PersistentVolumeClaim of this name
    # in each ModelDeployment's namespace; empty: no cache unless a ModelDeployment names one.
    "KUBESERVE_MODEL_CACHE_CLAIM": "",
    "KUBESERVE_MODEL_CACHE_MAX_SIZE": "50Gi",
    # The default parent Gateway ("namespace/name") of every ModelDeployment that names none
    # in spec.gateway (docs/rollouts.md); empty: no HTTPRoute unless spec.gateway is set.
    "KUBESERVE_GATEWAY": "",
}


@dataclass(frozen=True)
class OperatorConfig:
    images: Mapping[tuple[Runtime, bool], str] = field(default_factory=lambda: _images(ENV_VARS))
    storage_initializer_image: str = ENV_VARS["KUBESERVE_IMAGE_STORAGE_INITIALIZER"]
    image_pull_policy: str = ENV_VARS["KUBESERVE_IMAGE_PULL_POLICY"]
    gpu_product_label: str = ENV_VARS["KUBESERVE_GPU_PRODUCT_LABEL"]
    gpu_memory_label: str = ENV_VARS["KUBESERVE_GPU_MEMORY_LABEL"]
    gpu_taint_key: str = ENV_VARS["KUBESERVE_GPU_TAINT_KEY"]
    prometheus_url: str = ENV_VARS["KUBESERVE_PROMETHEUS_URL"]
    cluster_domain: str = ENV_VARS["KUBESERVE_CLUSTER_DOMAIN"]
    resync_seconds: float = float(ENV_VARS["KUBESERVE_RESYNC_SECONDS"])
    field_manager: str = ENV_VARS["KUBESERVE_FIELD_MANAGER"]
    model_cache_claim: str = ENV_VARS["KUBESERVE_MODEL_CACHE_CLAIM"]
    model_cache_max_size: str = ENV_VARS["KUBESERVE_MODEL_CACHE_MAX_SIZE"]
    # (namespace, name) of the default parent Gateway, or None.
    gateway: tuple[str, str] | None = None

    def image(self, runtime: Runtime, gpu: bool) -> str:
        return self.images[(runtime, gpu)]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> OperatorConfig:
        env = {name: environ.get(name) or default for name, default in ENV_VARS.items()}
        resync = float(env["KUBESERVE_RESYNC_SECONDS"])
        if resync <= 0:
            raise ValueError("KUBESERVE_RESYNC_SECONDS must be > 0")
        claim = env["KUBESERVE_MODEL_CACHE_CLAIM"]
        if claim and not re.match(DNS_SUBDOMAIN_PATTERN, claim):
            raise ValueError(f"KUBESERVE_MODEL_CACHE_CLAIM {claim!r} is not a claim name")
        if not re.match(CACHE_SIZE_PATTERN, env["KUBESERVE_MODEL_CACHE_MAX_SIZE"]):
            raise ValueError("KUBESERVE_MODEL_CACHE_MAX_SIZE must be a size such as 50Gi")
        return cls(
            gateway=parse_gateway(env["KUBESERVE_GATEWAY"]),
            images=_images(env),
            storage_initializer_image=env["KUBESERVE_IMAGE_STORAGE_INITIALIZER"],
            image_pull_policy=env["KUBESERVE_IMAGE_PULL_POLICY"],
            gpu_product_label=env["KUBESERVE_GPU_PRODUCT_LABEL"],
            gpu_memory_label=env["KUBESERVE_GPU_MEMORY_LABEL"],
            gpu_taint_key=env["KUBESERVE_GPU_TAINT_KEY"],
            prometheus_url=env["KUBESERVE_PROMETHEUS_URL"],
            cluster_domain=env["KUBESERVE_CLUSTER_DOMAIN"],
            resync_seconds=resync,
            field_manager=env["KUBESERVE_FIELD_MANAGER"],
            model_cache_claim=claim,
            model_cache_max_size=env["KUBESERVE_MODEL_CACHE_MAX_SIZE"],
        )


def parse_gateway(value: str) -> tuple[str, str] | None:
    """KUBESERVE_GATEWAY: "namespace/name" of a Gateway, or empty for none."""
    if not value:
        return None
    namespace, _, name = value.partition("/")
    if not re.match(DNS_LABEL_PATTERN, namespace) or not re.match(DNS_SUBDOMAIN_PATTERN, name):
        raise ValueError(f"KUBESERVE_GATEWAY {value!r} must be namespace/name of a Gateway")
    return namespace, name


def _images(env: Mapping[str, str]) -> dict[tuple[Runtime, bool], str]:
    images = {}
    for runtime in Runtime:
        base = f"KUBESERVE_IMAGE_{runtime.value.upper()}"
        images[(runtime, False)] = env[base]
        images[(runtime, True)] = env[f"{base}_GPU"]
    return images
