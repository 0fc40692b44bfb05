"""The ModelDeployment API (kubeserve.io/v1alpha1): parse once, validate once, frozen.

These pydantic models are the single source of the CRD's OpenAPI schema (see ``crd.py``):
field descriptions, defaults, bounds and patterns are written here once. Cross-field rules
are written twice on purpose, as CEL for the API server (``CEL_RULES``) and as Python
validators here, and a test feeds both the same corpus so they cannot drift.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from . import embedded

GROUP = "kubeserve.io"
VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
API_VERSION = f"{GROUP}/{VERSION}"

# Kubernetes quantities ("500m", "2Gi", 1): resource.Quantity's grammar (one optional sign,
# digits with at most one point, one suffix), without the minus: resources are never negative.
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]{1,2}))?$"
)
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
MIG_PROFILE_PATTERN = r"^[1-7]g\.[0-9]+gb(\+me)?$"
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"

CLUSTER_URI_SCHEMES = ("s3", "gs", "https", "pvc")
# What a cluster's model URI may be: exactly what the storage initializer (and the pvc volume
# mount) can use, so kubectl apply refuses what a pod could never fetch. No control
# characters or spaces anywhere. s3/gs: a bucket name (lowercase), a key, no query or
# fragment. https: a host, a port up to 65535, a path naming a file (not ending in /), then
# an optional query and fragment. pvc: a claim name (a DNS subdomain), an optional sub-path.
_URI_CHAR = r"[^\x00-\x20\x7f?#]"
# A bucket name: 3 to 222 characters (S3: 3-63; GCS: 3-63, or up to 222 with dots), lowercase
# letters, digits, '.', '_', '-', alphanumeric at both ends. Exactly the storage initializer's
# check (kubeserve.dataplane.storage.uri._BUCKET), so the two agree on every bucket.
_URI_BUCKET = r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]"
_URI_HOST = (
    r"([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])"
)
_URI_PORT = (
    r"(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?"
)
MODEL_URI_PATTERN = (
    rf"^((s3|gs)://{_URI_BUCKET}(/{_URI_CHAR}*)?"
    rf"|https://{_URI_HOST}{_URI_PORT}/{_URI_CHAR}*[^\x00-\x20\x7f?#/]"
    r"(\?[^\x00-\x20\x7f#]*)?(#[^\x00-\x20\x7f]*)?"
    r"|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
    rf"(/{_URI_CHAR}*)?)$"
)
# user:password@ before the host.
URI_USERINFO_PATTERN = r"^[A-Za-z0-9+.-]+://[^/?#]*@"
# '.' and '..' segments, also percent-encoded: a traversal out of the bucket, the claim or
# the server's directory.
URI_DOT_SEGMENT_PATTERN = r"(^|/)(\.|%2[eE]){1,2}(/|$)"
# A query that carries a credential: a presigned URL's signature, a token, a password.
URI_QUERY_CREDENTIAL_PATTERN = (
    r"(?i)[?&](x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|"
    r"x-goog-credential|signature|sig|token|access_token|password|secret)="
)
MAX_URI_LENGTH = 2048


class InvalidSpec(ValueError):
    """The one error for a ModelDeployment that cannot be served; names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="forbid",
        use_enum_values=False,
    )
    # CEL rules written on this level of the CRD schema: (rule, message, Python twin in validators).
    cel_rules: ClassVar[tuple[tuple[str, str], ...]] = ()


def _desc(text: str, **kwargs: Any) -> Any:
    return Field(description=text, **kwargs)


class Runtime(StrEnum):
    TFSERVING = "tfserving"
    TORCHSERVE = "torchserve"
    ONNXRUNTIME = "onnxruntime"


class AutoscalingEngine(StrEnum):
    HPA = "hpa"
    KEDA = "keda"
    KEDA_HTTP = "keda-http"


class MetricType(StrEnum):
    CPU = "cpu"
    MEMORY = "memory"
    REQUESTS_PER_SECOND = "requestsPerSecond"
    QUEUE_LATENCY = "queueLatency"
    CONCURRENCY = "concurrency"
    GPU_UTILIZATION = "gpuUtilization"


class RolloutStrategy(StrEnum):
    ROLLING_UPDATE = "RollingUpdate"
    RECREATE = "Recreate"


class GraphOptimizationLevel(StrEnum):
    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


class ExecutionProvider(StrEnum):
    CPU = "CPU"
    CUDA = "CUDA"
    TENSORRT = "TensorRT"


def _matching(pattern: str, what: str) -> AfterValidator:
    def check(value: str | int) -> str | int:
        if isinstance(value, str) and not re.match(pattern, value):
            raise ValueError(f"{value!r} is not {what}")
        if isinstance(value, int) and value < 0:
            raise ValueError(f"{value} is negative")
        return value

    return AfterValidator(check)


INT_OR_PERCENT_PATTERN = r"^[0-9]+%?$"
# maxUnavailable: a count, or a percentage up to 100%.
UP_TO_100_PERCENT_PATTERN = r"^([0-9]+|(100|[1-9]?[0-9])%)$"


def _count_as_number(value: str | int) -> str | int:
    # The API server takes a string only as a percentage ("5" is refused): "5" means 5.
    return int(value) if isinstance(value, str) and value.isdigit() else value


Quantity = Annotated[
    str | int,
    _matching(QUANTITY_PATTERN, "a Kubernetes quantity such as 500m or 2Gi"),
    Field(
        json_schema_extra={
            "x-kubernetes-int-or-string": True,
            "pattern": QUANTITY_PATTERN,
            "minimum": 0,
        }
    ),
]
UpTo100Percent = Annotated[
    str | int,
    _matching(UP_TO_100_PERCENT_PATTERN, "a count or a percentage up to 100%"),
    AfterValidator(_count_as_number),
    Field(
        json_schema_extra={
            "x-kubernetes-int-or-string": True,
            "pattern": UP_TO_100_PERCENT_PATTERN,
            "minimum": 0,
        }
    ),
]
IntOrPercent = Annotated[
    str | int,
    _matching(INT_OR_PERCENT_PATTERN, "a count or a percentage such as 25%"),
    AfterValidator(_count_as_number),
    Field(
        json_schema_extra={
            "x-kubernetes-int-or-string": True,
            "pattern": INT_OR_PERCENT_PATTERN,
            "minimum": 0,
        }
    ),
]


def _cel_string(text: str) -> str:
    """A Python string as a CEL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# A cache bound: bytes with a binary or decimal suffix, above zero (no milli-bytes).
CACHE_SIZE_PATTERN = r"^[1-9][0-9]*(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"


def _positive(value: str | int) -> str | int:
    if isinstance(value, int) and value < 1:
        raise ValueError("must be at least 1 byte")
    return value


CacheSize = Annotated[
    str | int,
    _matching(CACHE_SIZE_PATTERN, "a size such as 20Gi or 500M"),
    AfterValidator(_positive),
    Field(
        json_schema_extra={
            "x-kubernetes-int-or-string": True,
            "pattern": CACHE_SIZE_PATTERN,
            "minimum": 1,
        }
    ),
]


class ModelCache(_Model):
    enabled: bool = _desc(
        "false: never use a model cache for this model, even when the operator has a "
        "cluster-wide one (modelCache.claimName in the chart).",
        default=True,
    )
    claim_name: str | None = _desc(
        "A PersistentVolumeClaim in this namespace that holds the cache (ReadWriteMany when "
        "pods run on several nodes), shared by every ModelDeployment that names it. Default: "
        "the operator's cluster-wide claim; one of the two must be set.",
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )
    max_size: CacheSize | None = _desc(
        "Bound of the cache's total size: the storage initializer evicts the least recently "
        "used models beyond it, and does not cache a model bigger than it. Keep it below the "
        "claim's capacity. Default: the operator's (modelCache.maxSize, 50Gi).",
        default=None,
    )


class ModelSource(_Model):
    uri: str = _desc(
        "Where the model lives: s3://bucket/path, gs://bucket/path, https://host/path (a file or "
        "an archive), or pvc://claim/path (mounted read-only). `kubeserve serve` also accepts a "
        "local path or file://. Credentials never go in the URI: use credentialsSecret.",
        min_length=1,
        max_length=MAX_URI_LENGTH,
        # Checked in _uri, so that `kubeserve serve` can admit local paths.
        json_schema_extra={"pattern": MODEL_URI_PATTERN},
    )
    name: str | None = _desc(
        "The name the server exposes the model under. Defaults to metadata.name.",
        default=None,
        max_length=128,
        pattern=MODEL_NAME_PATTERN,
    )
    credentials_secret: str | None = _desc(
        "Name of a Secret in the same namespace, read only by the storage initializer (mounted "
        "as files). Keys: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, "
        "GOOGLE_APPLICATION_CREDENTIALS_JSON, HTTPS_BEARER_TOKEN. Not allowed with pvc://.",
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )
    cache: ModelCache | None = _desc(
        "Keep the downloaded model in a shared model cache, so the next pods of this model "
        "version copy it from there instead of downloading it (docs/coldstart.md). Unset: the "
        "operator's cluster-wide cache, if any. Only for s3://, gs:// and https:// URIs.",
        default=None,
    )

    cel_rules = (
        (
            f"!self.uri.matches({_cel_string(URI_USERINFO_PATTERN)})",
            "model.uri must not embed credentials (user:password@); put them in a Secret and "
            "set model.credentialsSecret",
        ),
        (
            f"!self.uri.matches({_cel_string(URI_QUERY_CREDENTIAL_PATTERN)})",
            "model.uri must not carry credentials in its query (a presigned URL's signature, a "
            "token); put them in a Secret and set model.credentialsSecret",
        ),
        (
            f"!self.uri.matches({_cel_string(URI_DOT_SEGMENT_PATTERN)})",
            "model.uri must not contain '.' or '..' path segments (also not as %2e)",
        ),
        (
            "!has(self.credentialsSecret) || !self.uri.startsWith('pvc://')",
            "model.credentialsSecret is not used with pvc:// URIs; remove it",
        ),
        (
            "!has(self.cache) || !self.uri.startsWith('pvc://')",
            "model.cache applies only to downloaded models (s3://, gs://, https://); a pvc:// "
            "model is read from its volume directly: remove model.cache",
        ),
    )

    @field_validator("uri", mode="before")
    @classmethod
    def _uri(cls, value: Any, info: ValidationInfo) -> Any:
        # The messages never repeat the URI: it may hold a secret.
        if not isinstance(value, str):
            return value
        local = bool((info.context or {}).get("local"))
        if re.match(URI_USERINFO_PATTERN, value):
            raise ValueError(
                "must not embed credentials (user:password@); put them in a Secret and set "
                "model.credentialsSecret"
            )
        if not local and re.search(URI_QUERY_CREDENTIAL_PATTERN, value):
            # In a cluster the URI is in the pod spec, readable by anyone who can read pods.
            raise ValueError(
                "must not carry credentials in its query (a presigned URL's signature, a "
                "token); put them in a Secret and set model.credentialsSecret "
                "(HTTPS_BEARER_TOKEN for https)"
            )
        if local and _is_local_uri(value):
            # `kubeserve serve` reads models from this machine ("./model" is fine there); the
            # pattern is for clusters.
            if re.search(r"(^|/)\.\.(/|$)", value):
                raise ValueError("must not contain '..' path segments")
            return value
        if re.search(URI_DOT_SEGMENT_PATTERN, value):
            raise ValueError("must not contain '.' or '..' path segments (also not as %2e)")
        if not re.match(MODEL_URI_PATTERN, value):
            raise ValueError(
                "must be s3://bucket/key, gs://bucket/key, https://host/file (a file, not a "
                "directory) or pvc://claim/path, without spaces or control characters"
            )
        return value

    @model_validator(mode="after")
    def _secret_with_pvc(self) -> ModelSource:
        if self.credentials_secret and self.uri.startswith("pvc://"):
            raise ValueError("credentialsSecret is not used with pvc:// URIs; remove it")
        if self.cache is not None and self.uri.startswith("pvc://"):
            raise ValueError(
                "cache applies only to downloaded models (s3://, gs://, https://); a pvc:// "
                "model is read from its volume directly: remove model.cache"
            )
        return self

    @property
    def scheme(self) -> str:
        return self.uri.split("://", 1)[0]


def _is_local_uri(value: str) -> bool:
    return value.startswith("file://") or "://" not in value


class EnvVar(_Model):
    name: str = _desc("Environment variable name.", min_length=1, pattern=ENV_NAME_PATTERN)
    value: str | None = _desc("Literal value.", default=None)
    value_from: dict[str, Any] | None = _desc(
        "A Kubernetes EnvVarSource (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef).",
        default=None,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True, "type": "object"},
    )

    cel_rules = (
        ("!(has(self.value) && has(self.valueFrom))", "env: set value or valueFrom, not both"),
    )

    @model_validator(mode="after")
    def _one_source(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError("set value or valueFrom, not both")
        return self

    @field_validator("value_from")
    @classmethod
    def _env_source(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            embedded.check_env_source(value)
        return value


class Toleration(_Model):
    key: str | None = _desc(
        "Taint key to tolerate; empty with Exists matches all.",
        default=None,
        max_length=embedded.QUALIFIED_NAME_MAX,
        # Empty, or a qualified name.
        pattern="^(" + embedded.QUALIFIED_NAME_PATTERN[1:-1] + ")?$",
    )
    operator: str | None = _desc(
        "Exists or Equal (default Equal).", default=None, pattern=r"^(Exists|Equal)$"
    )
    value: str | None = _desc(
        "Taint value for Equal.",
        default=None,
        max_length=63,
        pattern=embedded.LABEL_VALUE_PATTERN,
    )
    effect: str | None = _desc(
        "NoSchedule, PreferNoSchedule or NoExecute; empty matches all.",
        default=None,
        pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)?$",
    )
    toleration_seconds: int | None = _desc("How long a NoExecute taint is tolerated.", default=None)

    cel_rules = (
        (
            "!has(self.operator) || self.operator != 'Exists' || !has(self.value) "
            "|| self.value == ''",
            "tolerations: operator Exists matches any value; remove value",
        ),
        (
            "(has(self.key) && self.key != '') "
            "|| (has(self.operator) && self.operator == 'Exists')",
            "tolerations: an empty key tolerates every taint only with operator Exists",
        ),
        (
            "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            "tolerations: tolerationSeconds applies only to effect NoExecute",
        ),
    )

    @model_validator(mode="after")
    def _kubernetes_rules(self) -> Toleration:
        # The API server's own checks of a Toleration (they would fail every apply).
        if self.operator == "Exists" and self.value:
            raise ValueError("operator Exists matches any value; remove value")
        if not self.key and self.operator != "Exists":
            raise ValueError("an empty key tolerates every taint only with operator Exists")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds applies only to effect NoExecute")
        return self


class ResourceRequirements(_Model):
    requests: dict[str, Quantity] | None = _desc(
        "Minimum resources, e.g. {cpu: 500m, memory: 1Gi}.", default=None
    )
    limits: dict[str, Quantity] | None = _desc(
        "Maximum resources. GPU resources are set from spec.gpu, not here.", default=None
    )

    @model_validator(mode="after")
    def _kubernetes_rules(self) -> ResourceRequirements:
        # The API server's checks of a container's resources; the CRD cannot check map keys
        # or compare quantities, so they live here (see docs/reliability.md).
        requests, limits = self.requests or {}, self.limits or {}
        for section, values in (("requests", requests), ("limits", limits)):
            for name, raw in values.items():
                problem = _resource_name_problem(name)
                if problem:
                    raise ValueError(f"{section}.{name}: {problem}")
                if "/" in name and _quantity(raw) % 1:
                    raise ValueError(f"{section}.{name}: an extended resource is a whole number")
        for name, raw in requests.items():
            if name in limits and _quantity(raw) > _quantity(limits[name]):
                raise ValueError(f"requests.{name} must not exceed limits.{name}")
            if "/" in name and name in limits and _quantity(raw) != _quantity(limits[name]):
                raise ValueError(
                    f"requests.{name}: an extended resource's request equals its limit"
                )
            if "/" in name and name not in limits:
                raise ValueError(f"requests.{name}: an extended resource needs a limit (equal)")
        return self


_STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
_SUFFIXES = {
    "": Decimal(1),
    **{s: Decimal(10) ** (3 * (i - 3)) for i, s in enumerate("num kMGTPE") if s != " "},
    **{f"{s}i": Decimal(2) ** (10 * (i + 1)) for i, s in enumerate("KMGTPE")},
}


def _quantity(value: str | int) -> Decimal:
    """The value of a quantity that matched QUANTITY_PATTERN."""
    if isinstance(value, int):
        return Decimal(value)
    match = re.match(r"^\+?([0-9.]+)(.*)$", value)
    assert match is not None
    number, suffix = Decimal(match[1]), match[2]
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return number * Decimal(10) ** int(suffix[1:])
    return number * _SUFFIXES[suffix]


def _resource_name_problem(name: str) -> str | None:
    if name in _STANDARD_RESOURCES or re.match(r"^hugepages-[0-9]+[KMGTPE]i$", name):
        return None
    if "/" not in name:
        return (
            "not a resource: cpu, memory, ephemeral-storage, hugepages-<size>, or a "
            "vendor's domain/name (GPUs go in spec.gpu)"
        )
    problem = embedded.qualified_name_problem(name)
    if problem:
        return problem
    if name.split("/", 1)[0].endswith("kubernetes.io"):
        return "the kubernetes.io domain is reserved"
    return None


class Gpu(_Model):
    count: int = _desc(
        "Number of GPU devices per replica (a whole number: GPUs are not shared). With "
        "migProfile: the number of MIG slices, which must be 1.",
        default=1,
        ge=1,
        le=16,
    )
    resource_name: str = _desc(
        "The extended resource the device plugin advertises: nvidia.com/gpu (NVIDIA device "
        "plugin / GPU Operator), amd.com/gpu (AMD device plugin), or any other vendor's. "
        "Requested in both limits and requests.",
        default="nvidia.com/gpu",
        max_length=253,
        pattern=r"^[a-z0-9.-]+/[a-z0-9.-]+$",
    )
    product: (
        list[
            Annotated[
                str,
                # A label value: the node affinity matches it against a node label.
                Field(
                    min_length=1,
                    max_length=63,
                    pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
                ),
            ]
        ]
        | None
    ) = _desc(
        "Accepted GPU products, matched (operator In) against the GPU Feature Discovery "
        "product label, nvidia.com/gpu.product by default (e.g. NVIDIA-A100-SXM4-80GB, "
        "NVIDIA-L4). Any of them will do.",
        default=None,
        min_length=1,
        max_length=16,
    )
    min_memory_mi_b: int | None = Field(
        default=None,
        alias="minMemoryMiB",
        ge=1,
        le=10_000_000,
        description="Minimum memory per GPU in MiB, matched with Gt on the GPU Feature "
        "Discovery memory label (nvidia.com/gpu.memory by default). Whole GPUs only.",
    )
    mig_profile: str | None = _desc(
        "A MIG profile such as 1g.10gb or 3g.40gb: requests one nvidia.com/mig-<profile> "
        "slice (the device plugin's mixed MIG strategy) instead of a whole GPU. A +me "
        "profile is advertised with a dot: 1g.10gb+me requests nvidia.com/mig-1g.10gb.me.",
        default=None,
        pattern=MIG_PROFILE_PATTERN,
    )
    runtime_class_name: str | None = _desc(
        "RuntimeClass for the pod (e.g. nvidia), when the cluster's container runtime needs "
        "one to expose GPUs (the GPU Operator's default containerd setup does not).",
        default=None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )

    cel_rules = (
        (
            "!has(self.migProfile) || self.count == 1",
            "gpu.migProfile: a process can use only one MIG device; keep gpu.count 1 and scale "
            "with replicas",
        ),
        (
            "!has(self.migProfile) || self.resourceName == 'nvidia.com/gpu'",
            "gpu.migProfile is an NVIDIA feature; leave gpu.resourceName at nvidia.com/gpu",
        ),
        (
            "!has(self.migProfile) || !has(self.minMemoryMiB)",
            "gpu.minMemoryMiB selects whole GPUs; a MIG slice's memory is fixed by its profile "
            "(1g.10gb has 10 GB): remove gpu.minMemoryMiB",
        ),
        (
            "!self.resourceName.startsWith('nvidia.com/mig-')",
            "gpu.resourceName: request a MIG slice with gpu.migProfile (e.g. migProfile: "
            "1g.10gb), not with resourceName nvidia.com/mig-...",
        ),
    )

    @model_validator(mode="after")
    def _mig(self) -> Gpu:
        if self.mig_profile and self.count != 1:
            raise ValueError(
                "migProfile: a process can use only one MIG device; keep count 1 and scale "
                "with replicas"
            )
        if self.mig_profile and self.resource_name != "nvidia.com/gpu":
            raise ValueError(
                "migProfile is an NVIDIA feature; leave resourceName at nvidia.com/gpu"
            )
        if self.mig_profile and self.min_memory_mi_b is not None:
            raise ValueError(
                "minMemoryMiB selects whole GPUs; a MIG slice's memory is fixed by its profile "
                "(1g.10gb has 10 GB): remove minMemoryMiB"
            )
        if self.resource_name.startswith("nvidia.com/mig-"):
            raise ValueError(
                "resourceName: request a MIG slice with migProfile (e.g. migProfile: 1g.10gb), "
                "not with resourceName nvidia.com/mig-..."
            )
        return self


class Metric(_Model):
    type: MetricType = _desc(
        "cpu, memory: average utilization in % of the container's requests. "
        "requestsPerSecond, queueLatency (milliseconds), concurrency (requests in flight): "
        "the runtime's own Prometheus series. gpuUtilization: DCGM_FI_DEV_GPU_UTIL in % "
        "(DCGM_FI_PROF_GR_ENGINE_ACTIVE for MIG slices). See docs/autoscaling.md."
    )
    target: float = _desc(
        "Target per pod: % for cpu, memory and gpuUtilization; requests per second; "
        "milliseconds for queueLatency; requests in flight for concurrency.",
        gt=0,
        le=1_000_000,
    )
    query: str | None = _desc(
        "engine keda only: a PromQL query that replaces the runtime's series and returns "
        "one number for the whole ModelDeployment, e.g. your ingress controller's request "
        "rate to this Service. Needed for minReplicas 0: at zero replicas the model pods "
        "report nothing, so only a signal measured outside them can scale back up.",
        default=None,
        min_length=1,
        max_length=4096,
    )


class Behavior(_Model):
    scale_down_stabilization_seconds: int | None = _desc(
        "How long load must stay low before the autoscaler removes pods (HPA "
        "behavior.scaleDown.stabilizationWindowSeconds; with KEDA the same through "
        "advanced.horizontalPodAutoscalerConfig, and the cooldownPeriod before scaling to "
        "zero; with keda-http the HTTPScaledObject's scaledownPeriod). Default: Kubernetes' "
        "300.",
        default=None,
        ge=0,
        le=3600,
    )


# engine keda-http: the metrics the KEDA HTTP add-on's interceptor measures itself.
HTTP_METRIC_TYPES = (MetricType.REQUESTS_PER_SECOND, MetricType.CONCURRENCY)
# A host the interceptor routes by (the request's Host header): a DNS name, lowercase.
HTTP_HOST_PATTERN = DNS_SUBDOMAIN_PATTERN
# A path prefix: an absolute URL path without query, fragment, spaces or control characters.
HTTP_PATH_PREFIX_PATTERN = r"^/[^\x00-\x20\x7f?#]*$"
DEFAULT_COLD_START_TIMEOUT_SECONDS = 300


class HttpScaling(_Model):
    hosts: (
        list[Annotated[str, Field(min_length=1, max_length=253, pattern=HTTP_HOST_PATTERN)]] | None
    ) = _desc(
        "Host header values the interceptor routes to this model. Default: the model "
        "Service's namespaced in-cluster names (<name>.<namespace>.svc.<clusterDomain>, "
        "<name>.<namespace>.svc, <name>.<namespace>), which no other ModelDeployment can "
        "claim. Every host must be unique across the cluster's HTTPScaledObjects.",
        default=None,
        min_length=1,
        max_length=16,
    )
    path_prefixes: (
        list[Annotated[str, Field(min_length=1, max_length=256, pattern=HTTP_PATH_PREFIX_PATTERN)]]
        | None
    ) = _desc(
        "Route only requests whose path starts with one of these (e.g. /v1/models/resnet). "
        "Default: every path of the hosts.",
        default=None,
        min_length=1,
        max_length=16,
    )
    cold_start_timeout_seconds: int = _desc(
        "How long the interceptor holds a request while the first pod starts (the "
        "HTTPScaledObject's timeouts.conditionWait). A model server's cold start is its pod "
        "start: scheduling, image pull, model download, load and warm-up, often minutes "
        "(docs/coldstart.md); the add-on's global default is sized for apps that start in "
        "seconds.",
        default=DEFAULT_COLD_START_TIMEOUT_SECONDS,
        ge=1,
        le=3600,
    )


class Autoscaling(_Model):
    min_replicas: int = _desc(
        "Lowest replica count. 0 (scale to zero) needs engine keda-http, or engine keda and "
        "a metric with a query.",
        default=1,
        ge=0,
        le=1000,
    )
    max_replicas: int = _desc("Highest replica count.", ge=1, le=1000)
    engine: AutoscalingEngine = _desc(
        "hpa: an autoscaling/v2 HorizontalPodAutoscaler (runtime and GPU metrics need "
        "prometheus-adapter). keda: a KEDA ScaledObject (needs KEDA; queries Prometheus "
        "directly). keda-http: a KEDA HTTP add-on HTTPScaledObject, whose interceptor "
        "counts the requests and holds them while a model scaled to zero starts.",
        default=AutoscalingEngine.HPA,
    )
    metrics: list[Metric] = _desc(
        "What to scale on, each type at most once; the autoscaler follows whichever asks for "
        "the most replicas. Defaults to cpu at 80%.",
        default_factory=lambda: [Metric(type=MetricType.CPU, target=80)],
        min_length=1,
        max_length=8,
    )
    behavior: Behavior | None = _desc("Scaling behaviour.", default=None)
    http: HttpScaling | None = _desc(
        "engine keda-http only: how requests reach the interceptor and how long it holds them.",
        default=None,
    )

    cel_rules = (
        ("self.minReplicas <= self.maxReplicas", "autoscaling.minReplicas must be <= maxReplicas"),
        (
            "self.minReplicas >= 1 || self.engine in ['keda', 'keda-http']",
            "autoscaling.minReplicas 0 (scale to zero) needs engine keda or keda-http",
        ),
        (
            "self.minReplicas >= 1 || self.engine == 'keda-http' || "
            "(has(self.metrics) && self.metrics.exists(m, has(m.query)))",
            "autoscaling.minReplicas 0 needs a metric with a query measured outside the model "
            "pods (e.g. your ingress's request rate): at zero replicas the pods report nothing, "
            "so cpu, memory and the runtime's own series could never scale back up",
        ),
        (
            "self.engine != 'hpa' || !has(self.metrics) || self.metrics.all(m, !has(m.query))",
            "autoscaling.metrics[].query needs engine keda; with hpa, metrics come from "
            "prometheus-adapter rules (docs/autoscaling.md)",
        ),
        (
            "!has(self.metrics) || self.metrics.all(m, !has(m.query) || "
            "!(m.type in ['cpu', 'memory']))",
            "autoscaling.metrics[].query applies to requestsPerSecond, queueLatency, concurrency "
            "and gpuUtilization; cpu and memory come from the kubelet",
        ),
        (
            "!has(self.metrics) || self.metrics.all(m, self.metrics.exists_one(n, "
            "n.type == m.type))",
            "autoscaling.metrics: list each type at most once",
        ),
        (
            "self.engine != 'keda-http' || (has(self.metrics) && size(self.metrics) == 1 && "
            "self.metrics[0].type in ['requestsPerSecond', 'concurrency'])",
            "autoscaling.engine keda-http scales on exactly one metric, requestsPerSecond or "
            "concurrency, which the HTTP add-on's interceptor measures itself: list one",
        ),
        (
            "self.engine != 'keda-http' || !has(self.metrics) || "
            "self.metrics.all(m, !has(m.query))",
            "autoscaling.metrics[].query is not used with engine keda-http: the interceptor "
            "counts the requests itself; remove query",
        ),
        (
            "self.engine != 'keda-http' || !has(self.metrics) || "
            "self.metrics.all(m, double(int(m.target)) == double(m.target))",
            "autoscaling.metrics[].target must be a whole number with engine keda-http (the "
            "add-on's targetValue is an integer)",
        ),
        (
            "!has(self.http) || self.engine == 'keda-http'",
            "autoscaling.http applies only to engine keda-http",
        ),
    )

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be <= maxReplicas")
        if self.min_replicas == 0 and self.engine == AutoscalingEngine.HPA:
            raise ValueError("minReplicas 0 (scale to zero) needs engine keda or keda-http")
        if self.engine == AutoscalingEngine.KEDA_HTTP:
            self._keda_http()
        elif self.http is not None:
            raise ValueError("http applies only to engine keda-http")
        if (
            self.min_replicas == 0
            and self.engine == AutoscalingEngine.KEDA
            and not any(m.query for m in self.metrics)
        ):
            raise ValueError(
                "minReplicas 0 needs a metric with a query measured outside the model pods "
                "(e.g. your ingress's request rate): at zero replicas the pods report nothing, "
                "so cpu, memory and the runtime's own series could never scale back up"
            )
        if self.engine == AutoscalingEngine.HPA and any(m.query for m in self.metrics):
            raise ValueError(
                "metrics[].query needs engine keda; with hpa, metrics come from "
                "prometheus-adapter rules (docs/autoscaling.md)"
            )
        if any(m.query and m.type in (MetricType.CPU, MetricType.MEMORY) for m in self.metrics):
            raise ValueError(
                "metrics[].query applies to requestsPerSecond, queueLatency, concurrency and "
                "gpuUtilization; cpu and memory come from the kubelet"
            )
        types = [m.type for m in self.metrics]
        if len(set(types)) != len(types):
            raise ValueError("metrics: list each type at most once")
        return self

    def _keda_http(self) -> None:
        if (
            "metrics" not in self.model_fields_set
            or len(self.metrics) != 1
            or self.metrics[0].type not in HTTP_METRIC_TYPES
        ):
            raise ValueError(
                "engine keda-http scales on exactly one metric, requestsPerSecond or "
                "concurrency, which the HTTP add-on's interceptor measures itself: list one"
            )
        if any(m.query for m in self.metrics):
            raise ValueError(
                "metrics[].query is not used with engine keda-http: the interceptor counts the "
                "requests itself; remove query"
            )
        if any(not float(m.target).is_integer() for m in self.metrics):
            raise ValueError(
                "metrics[].target must be a whole number with engine keda-http (the add-on's "
                "targetValue is an integer)"
            )


class Rollout(_Model):
    strategy: RolloutStrategy = _desc(
        "Deployment strategy. Default: RollingUpdate; with a GPU and a fixed single replica, "
        "Recreate.",
        default=RolloutStrategy.ROLLING_UPDATE,
    )
    max_surge: IntOrPercent | None = _desc(
        "RollingUpdate maxSurge: extra pods during a rollout. Default 25%; with a GPU 0 (a "
        "surge pod would need a spare GPU), or 1 when maxUnavailable is set to 0.",
        default=None,
    )
    max_unavailable: UpTo100Percent | None = _desc(
        "RollingUpdate maxUnavailable. Default 25%; with a GPU 1, or 0 when maxSurge is set "
        "above 0.",
        default=None,
    )

    cel_rules = (
        (
            "self.strategy == 'RollingUpdate' || (!has(self.maxSurge) && "
            "!has(self.maxUnavailable))",
            "rollout.maxSurge and maxUnavailable apply only to RollingUpdate",
        ),
        (
            "!has(self.maxSurge) || !has(self.maxUnavailable) || "
            "!(string(self.maxSurge) in ['0', '0%'] && string(self.maxUnavailable) in ['0', '0%'])",
            "rollout: maxSurge and maxUnavailable cannot both be 0 (the rollout could never "
            "make progress)",
        ),
    )

    @model_validator(mode="after")
    def _rolling_only(self) -> Rollout:
        if self.strategy == RolloutStrategy.RECREATE and (
            self.max_surge is not None or self.max_unavailable is not None
        ):
            raise ValueError("maxSurge and maxUnavailable apply only to RollingUpdate")
        if str(self.max_surge) in ("0", "0%") and str(self.max_unavailable) in ("0", "0%"):
            raise ValueError(
                "maxSurge and maxUnavailable cannot both be 0 (the rollout could never make "
                "progress)"
            )
        return self


class Batching(_Model):
    max_batch_size: int = _desc(
        "Largest batch the server forms from concurrent requests.", default=1, ge=1, le=1024
    )
    max_delay_ms: float = _desc(
        "Longest a request waits for others to fill a batch, in milliseconds.",
        default=0,
        ge=0,
        le=10_000,
    )


class Threads(_Model):
    intra_op: int | None = _desc(
        "Threads one inference may use: ONNX Runtime's intra-op pool, TF Serving's "
        "--tensorflow_intra_op_parallelism, OMP_NUM_THREADS and MKL_NUM_THREADS in each "
        "TorchServe worker. Default: the container's CPU limit (spec.resources.limits.cpu) "
        "rounded up, divided among TorchServe's workers; without a CPU limit, the runtime's "
        "own default (one per core of the node).",
        default=None,
        ge=1,
        le=256,
    )
    inter_op: int | None = _desc(
        "Threads that run independent operators side by side: TF Serving's "
        "--tensorflow_inter_op_parallelism (default with a CPU limit: 2, or 1 with a 1-CPU "
        "limit), ONNX Runtime's inter-op pool (used only in parallel execution mode; default: "
        "ONNX Runtime's). Not for torchserve.",
        default=None,
        ge=1,
        le=256,
    )
    workers: int | None = _desc(
        "torchserve only: model worker processes, each holding its own copy of the model in "
        "memory (minWorkers, maxWorkers, default_workers_per_model). Default 1.",
        default=None,
        ge=1,
        le=64,
    )


class SessionOptions(_Model):
    intra_op_threads: int = _desc(
        "ONNX Runtime intra-op threads (0: from the CPU limit, as spec.threads.intraOp). "
        "spec.threads.intraOp says the same for every runtime; set one of the two.",
        default=0,
        ge=0,
        le=256,
    )
    inter_op_threads: int = _desc(
        "ONNX Runtime inter-op threads (0: default). spec.threads.interOp says the same; set "
        "one of the two.",
        default=0,
        ge=0,
        le=256,
    )
    graph_optimization_level: GraphOptimizationLevel = _desc(
        "ONNX Runtime graph optimisation level.", default=GraphOptimizationLevel.ALL
    )
    execution_provider: ExecutionProvider | None = _desc(
        "ONNX Runtime execution provider: CPU, CUDA or TensorRT (nodes a provider cannot run "
        "fall back: TensorRT to CUDA to CPU). CUDA and TensorRT need spec.gpu, and so the GPU "
        "image; the server refuses to start when its onnxruntime build lacks the provider. "
        "TensorRT builds an engine per input shape at load and on each new shape (seconds to "
        "minutes). Default: CUDA with spec.gpu (falling back to CPU with a warning), else CPU.",
        default=None,
    )


class TFServingOptions(_Model):
    xla: bool = _desc(
        "Pass --xla_cpu_compilation_enabled=true: XLA:CPU JIT for the SavedModel's functions "
        "exported with jit_compile=True (without it TF Serving refuses to compile them). "
        "Each new input shape compiles once (latency spike, memory).",
        default=False,
    )
    batch_threads: int | None = _desc(
        "Batching: num_batch_threads, batches processed in parallel. Default 4. Needs "
        "spec.batching.",
        default=None,
        ge=1,
        le=256,
    )
    max_enqueued_batches: int | None = _desc(
        "Batching: max_enqueued_batches, the queue before requests are refused with "
        "UNAVAILABLE. Default 1000. Needs spec.batching.",
        default=None,
        ge=1,
        le=1_000_000,
    )
    pad_variable_length_inputs: bool | None = _desc(
        "Batching: pad_variable_length_inputs, pad inputs of different lengths (2nd "
        "dimension on) to the longest in the batch; the model must tolerate the padding. "
        "Default false. Needs spec.batching.",
        default=None,
    )


class NetworkPolicy(_Model):
    enabled: bool = _desc(
        "Create a NetworkPolicy that admits ingress only to the serving and metrics ports.",
        default=False,
    )
    from_: list[dict[str, Any]] | None = Field(
        default=None,
        alias="from",
        description="NetworkPolicyPeers allowed in. Default: any pod in the same namespace.",
        json_schema_extra={
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        },
    )

    @field_validator("from_")
    @classmethod
    def _peers(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for index, peer in enumerate(value or []):
            try:
                embedded.check_peer(peer)
            except embedded.ShapeError as exc:
                raise embedded.ShapeError(_dotted(index, exc.path), exc.message) from None
        return value


# A Gateway API SectionName (a listener's name).
SECTION_NAME_PATTERN = DNS_SUBDOMAIN_PATTERN
# A Gateway API Hostname: a DNS name, optionally with one leading wildcard label.
ROUTE_HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600


class GatewayRef(_Model):
    name: str = _desc(
        "The parent Gateway's name (gateway.networking.k8s.io/v1).",
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
    )
    namespace: str | None = _desc(
        "The Gateway's namespace. Default: the ModelDeployment's. A Gateway in another "
        "namespace must admit routes from this one (its listeners' allowedRoutes).",
        default=None,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
    )
    section_name: str | None = _desc(
        "The listener of the Gateway to attach to. Default: every listener that admits the routes.",
        default=None,
        max_length=253,
        pattern=SECTION_NAME_PATTERN,
    )
    hostnames: (
        list[Annotated[str, Field(min_length=1, max_length=253, pattern=ROUTE_HOSTNAME_PATTERN)]]
        | None
    ) = _desc(
        "Host names the routes match (HTTPRoute and GRPCRoute spec.hostnames). Default: every "
        "host name of the listener, so one listener serves one ModelDeployment.",
        default=None,
        min_length=1,
        max_length=16,
    )


class Analysis(_Model):
    interval_seconds: int = _desc(
        "How often the canary's Prometheus series are queried; also the rate window "
        "(rate(...[interval])).",
        default=60,
        ge=15,
        le=3600,
    )
    failure_limit: int = _desc(
        "Consecutive breached checks that roll the canary back.", default=2, ge=1, le=100
    )
    max_error_ratio: float | None = _desc(
        "Highest tolerated share of failed requests (0-1) on the canary's pods, from the "
        "runtime's own request counters.",
        default=None,
        ge=0,
        le=1,
    )
    max_latency_ms: float | None = _desc(
        "Highest tolerated request latency at latencyQuantile, in milliseconds, from the "
        "runtime's own latency histogram.",
        default=None,
        gt=0,
        le=3_600_000,
    )
    latency_quantile: float = _desc(
        "The quantile maxLatencyMs applies to.", default=0.99, gt=0, lt=1
    )

    cel_rules = (
        (
            "has(self.maxErrorRatio) || has(self.maxLatencyMs)",
            "canary.analysis: set maxErrorRatio, maxLatencyMs or both",
        ),
    )

    @model_validator(mode="after")
    def _a_threshold(self) -> Analysis:
        if self.max_error_ratio is None and self.max_latency_ms is None:
            raise ValueError("set maxErrorRatio, maxLatencyMs or both")
        return self


class Canary(_Model):
    model: ModelSource = _desc(
        "The canary's model. Its name, when set, equals spec.model.name (clients send both "
        "the same requests); unset, it is the stable model's."
    )
    image: str | None = _desc(
        "The canary's server image. Default: spec.image, else the operator's image.",
        default=None,
        min_length=1,
        max_length=512,
    )
    env: list[EnvVar] | None = _desc(
        "The canary's extra environment; replaces spec.env when set.",
        default=None,
        max_length=128,
    )
    resources: ResourceRequirements | None = _desc(
        "The canary's CPU and memory; replaces spec.resources when set. GPUs come from "
        "spec.gpu: the canary runs on the same hardware.",
        default=None,
    )
    replicas: int | None = _desc(
        "Canary pods. Default: sized from trafficPercent and the stable replicas "
        "(docs/rollouts.md). Without a Gateway the split follows the pod counts, and status "
        "says what it is.",
        default=None,
        ge=1,
        le=1000,
    )
    traffic_percent: int = _desc(
        "The canary's share of the requests, 0-100. It gets it only while its pods are Ready; "
        "with mirror, the share of requests copied to it.",
        default=0,
        ge=0,
        le=100,
    )
    mirror: bool = _desc(
        "Send the canary a copy of trafficPercent % of the requests and drop its answers "
        "(the HTTPRoute RequestMirror filter): needs a Gateway (spec.gateway or the "
        "operator's default).",
        default=False,
    )
    progress_deadline_seconds: int = _desc(
        "How long the canary may take to become Ready before it is rolled back.",
        default=DEFAULT_PROGRESS_DEADLINE_SECONDS,
        ge=30,
        le=86_400,
    )
    analysis: Analysis | None = _desc(
        "Roll back when the canary's error ratio or latency breaches a threshold (queried "
        "from the operator's Prometheus).",
        default=None,
    )

    cel_rules = (
        (
            "!self.mirror || self.trafficPercent > 0",
            "canary.mirror copies trafficPercent % of the requests to the canary: set "
            "trafficPercent above 0 (100 copies every request)",
        ),
    )

    @model_validator(mode="after")
    def _mirror_share(self) -> Canary:
        if self.mirror and self.traffic_percent == 0:
            raise ValueError(
                "mirror copies trafficPercent % of the requests to the canary: set "
                "trafficPercent above 0 (100 copies every request)"
            )
        return self


CANARY_SAME_AS_STABLE = (
    "canary.model.uri is model.uri and the canary sets no image, env or resources: it would "
    "compare the stable model with itself; give the canary a new, versioned URI"
)
CANARY_MODEL_NAME = (
    "canary.model.name must equal model.name (clients send both the same requests); leave it "
    "unset to inherit it"
)
CANARY_SCALE_TO_ZERO = (
    "canary needs a stable that never scales to zero: with engine keda-http the interceptor "
    "routes around the canary's traffic split, and at zero replicas there is nothing to "
    "compare or split; use engine hpa or keda with minReplicas >= 1 during the canary"
)


class ModelDeploymentSpec(_Model):
    runtime: Runtime = _desc("The serving runtime: tfserving, torchserve or onnxruntime.")
    model: ModelSource = _desc("The model to serve and where to fetch it from.")
    replicas: int = _desc("Pod count. Ignored when autoscaling is set.", default=1, ge=0, le=1000)
    resources: ResourceRequirements | None = _desc(
        "CPU and memory for the server container.", default=None
    )
    image: str | None = _desc(
        "Server image override. Default: the operator's configured image for the runtime "
        "(its GPU variant when spec.gpu is set).",
        default=None,
        min_length=1,
        max_length=512,
    )
    env: list[EnvVar] | None = _desc(
        "Extra environment for the server container.", default=None, max_length=128
    )
    node_selector: (
        dict[str, Annotated[str, Field(max_length=63, pattern=embedded.LABEL_VALUE_PATTERN)]] | None
    ) = _desc("Merged with the GPU node selection, never overwritten by it.", default=None)
    tolerations: list[Toleration] | None = _desc(
        "Merged with the GPU toleration.", default=None, max_length=64
    )
    affinity: dict[str, Any] | None = _desc(
        "A Kubernetes Affinity; GPU node affinity terms are merged into it.",
        default=None,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True, "type": "object"},
    )
    gpu: Gpu | None = _desc("GPU request and node selection.", default=None)
    autoscaling: Autoscaling | None = _desc(
        "Autoscaling; when set, the autoscaler owns the replica count.", default=None
    )
    rollout: Rollout | None = _desc(
        "Deployment strategy override. Default is GPU-safe: no surge pod when a GPU is requested.",
        default=None,
    )
    batching: Batching | None = _desc(
        "Server-side dynamic batching (onnxruntime, torchserve, tfserving).", default=None
    )
    session_options: SessionOptions | None = _desc(
        "ONNX Runtime session options (runtime onnxruntime only).", default=None
    )
    threads: Threads | None = _desc(
        "Thread counts of the server, for every runtime. Unset counts are derived from the "
        "container's CPU limit (docs/runtimes.md#threads).",
        default=None,
    )
    network_policy: NetworkPolicy | None = _desc(
        "Optional NetworkPolicy restricting ingress to the serving ports.", default=None
    )
    tfserving: TFServingOptions | None = _desc(
        "TF Serving options: XLA and batching (runtime tfserving only).", default=None
    )
    gateway: GatewayRef | None = _desc(
        "A Gateway API parent Gateway: the operator attaches an HTTPRoute (and a GRPCRoute "
        "for a gRPC port) to it, with exact canary weights and mirroring. Default: the "
        "operator's (KUBESERVE_GATEWAY), else none: a canary then gets an approximate share "
        "through the Service (docs/rollouts.md).",
        default=None,
    )
    canary: Canary | None = _desc(
        "A second version of the model, for the same runtime, that takes trafficPercent % of "
        "the requests (or a copy of them) while it is Ready. Promote it by copying its fields "
        "into spec and removing spec.canary; remove it alone to abort (docs/rollouts.md).",
        default=None,
    )

    cel_rules = (
        (
            "!has(self.sessionOptions) || self.runtime == 'onnxruntime'",
            "sessionOptions applies only to runtime onnxruntime",
        ),
        (
            "!has(self.threads) || !has(self.threads.workers) || self.runtime == 'torchserve'",
            "threads.workers applies only to runtime torchserve (its model worker processes)",
        ),
        (
            "!has(self.threads) || !has(self.threads.interOp) || self.runtime != 'torchserve'",
            "threads.interOp does not apply to runtime torchserve: set threads.intraOp (threads "
            "per worker) and threads.workers",
        ),
        (
            "!has(self.threads) || !has(self.sessionOptions) || "
            "((!has(self.threads.intraOp) || !has(self.sessionOptions.intraOpThreads) || "
            "self.sessionOptions.intraOpThreads == 0) && (!has(self.threads.interOp) || "
            "!has(self.sessionOptions.interOpThreads) || self.sessionOptions.interOpThreads == 0))",
            "set each thread count once: in threads (intraOp, interOp) or in sessionOptions "
            "(intraOpThreads, interOpThreads), not both",
        ),
        # A transition rule (the API server checks it on updates only). The runtime is in
        # the Deployment's selector, which Kubernetes never lets change.
        (
            "self.runtime == oldSelf.runtime",
            "runtime is immutable: create a new ModelDeployment for the new runtime",
        ),
        (
            "!has(self.sessionOptions) || !has(self.sessionOptions.executionProvider) || "
            "self.sessionOptions.executionProvider == 'CPU' || has(self.gpu)",
            "sessionOptions.executionProvider CUDA and TensorRT need spec.gpu (a GPU node and "
            "the GPU image)",
        ),
        (
            "!has(self.tfserving) || self.runtime == 'tfserving'",
            "tfserving applies only to runtime tfserving",
        ),
        (
            "!has(self.tfserving) || has(self.batching) || (!has(self.tfserving.batchThreads) "
            "&& !has(self.tfserving.maxEnqueuedBatches) && "
            "!has(self.tfserving.padVariableLengthInputs))",
            "tfserving.batchThreads, maxEnqueuedBatches and padVariableLengthInputs tune "
            "batching: set spec.batching too",
        ),
        (
            "!has(self.canary) || self.canary.model.uri != self.model.uri || "
            "has(self.canary.image) || has(self.canary.env) || has(self.canary.resources)",
            CANARY_SAME_AS_STABLE,
        ),
        (
            "!has(self.canary) || !has(self.canary.model.name) || "
            "(has(self.model.name) && self.canary.model.name == self.model.name)",
            CANARY_MODEL_NAME,
        ),
        (
            "!has(self.canary) || !has(self.autoscaling) || "
            "(self.autoscaling.engine != 'keda-http' && self.autoscaling.minReplicas >= 1)",
            CANARY_SCALE_TO_ZERO,
        ),
    )

    @model_validator(mode="after")
    def _canary(self) -> ModelDeploymentSpec:
        canary = self.canary
        if canary is None:
            return self
        if (
            canary.model.uri == self.model.uri
            and canary.image is None
            and canary.env is None
            and canary.resources is None
        ):
            raise ValueError(CANARY_SAME_AS_STABLE)
        if canary.model.name is not None and canary.model.name != self.model.name:
            raise ValueError(CANARY_MODEL_NAME)
        scaling = self.autoscaling
        if scaling is not None and (
            scaling.engine == AutoscalingEngine.KEDA_HTTP or scaling.min_replicas == 0
        ):
            raise ValueError(CANARY_SCALE_TO_ZERO)
        return self

    @model_validator(mode="after")
    def _runtime_options(self) -> ModelDeploymentSpec:
        provider = self.session_options.execution_provider if self.session_options else None
        if provider not in (None, ExecutionProvider.CPU) and self.gpu is None:
            raise ValueError(
                "sessionOptions.executionProvider CUDA and TensorRT need spec.gpu (a GPU node "
                "and the GPU image)"
            )
        tfs = self.tfserving
        if tfs is not None and self.runtime != Runtime.TFSERVING:
            raise ValueError("tfserving applies only to runtime tfserving")
        if (
            tfs is not None
            and self.batching is None
            and (
                tfs.batch_threads is not None
                or tfs.max_enqueued_batches is not None
                or tfs.pad_variable_length_inputs is not None
            )
        ):
            raise ValueError(
                "tfserving.batchThreads, maxEnqueuedBatches and padVariableLengthInputs tune "
                "batching: set spec.batching too"
            )
        return self

    @field_validator("node_selector")
    @classmethod
    def _label_keys(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key in value or {}:
            problem = embedded.qualified_name_problem(key)
            if problem:
                raise embedded.ShapeError(_dotted(key), problem)
        return value

    @field_validator("affinity")
    @classmethod
    def _affinity(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            embedded.check_affinity(value)
        return value

    @model_validator(mode="after")
    def _session_options(self) -> ModelDeploymentSpec:
        if self.session_options is not None and self.runtime != Runtime.ONNXRUNTIME:
            raise ValueError("sessionOptions applies only to runtime onnxruntime")
        threads, session = self.threads, self.session_options
        if threads and threads.workers is not None and self.runtime != Runtime.TORCHSERVE:
            raise ValueError(
                "threads.workers applies only to runtime torchserve (its model worker processes)"
            )
        if threads and threads.inter_op is not None and self.runtime == Runtime.TORCHSERVE:
            raise ValueError(
                "threads.interOp does not apply to runtime torchserve: set threads.intraOp "
                "(threads per worker) and threads.workers"
            )
        if (
            threads
            and session
            and (
                (threads.intra_op is not None and session.intra_op_threads)
                or (threads.inter_op is not None and session.inter_op_threads)
            )
        ):
            raise ValueError(
                "set each thread count once: in threads (intraOp, interOp) or in "
                "sessionOptions (intraOpThreads, interOpThreads), not both"
            )
        return self


class Condition(_Model):
    """A metav1.Condition."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)
    type: str = _desc("Condition type, e.g. Ready.")
    status: str = _desc("True, False or Unknown.", pattern=r"^(True|False|Unknown)$")
    reason: str = _desc("CamelCase reason.")
    message: str = _desc("Human-readable detail.", default="")
    last_transition_time: str = _desc("When status last changed (RFC 3339).")
    observed_generation: int | None = _desc(
        "The generation this condition was computed for.", default=None
    )


class AutoscalerStatus(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)
    mode: str | None = _desc(
        "The autoscaling mode in force: hpa, keda, or keda-http (scale from zero through the "
        "KEDA HTTP add-on's interceptor).",
        default=None,
    )
    current_replicas: int | None = _desc("Replicas the autoscaler sees now.", default=None)
    desired_replicas: int | None = _desc("Replicas the autoscaler wants.", default=None)


class ColdStart(_Model):
    """The latest model-server pod start, read from the pod's status (docs/coldstart.md)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)
    pod: str = _desc("The pod that started.")
    ready_at: str = _desc("When it became Ready (RFC 3339).")
    download_seconds: float | None = _desc(
        "The storage initializer's fetch, unpack and layout check; unset for pvc:// models.",
        default=None,
    )
    cache: str | None = _desc(
        "The model cache's answer: off, miss, hit, or present (the pod already held it).",
        default=None,
    )
    startup_seconds: float = _desc(
        "Server container start to Ready: the runtime loads the model and runs its warm-up "
        "inference before it reports ready (resolution 1 s, plus the readiness probe period)."
    )
    total_seconds: float = _desc(
        "Pod created to Ready: scheduling, image pulls, download, load and warm-up."
    )


class CanaryState(StrEnum):
    PENDING = "Pending"  # created, no canary pod Ready: weight 0
    PROGRESSING = "Progressing"  # some canary pods Ready, weight moving up
    WEIGHTED = "Weighted"  # the requested share (or mirror) in effect
    PROMOTING = "Promoting"  # spec.model is the canary's: stable rolling, canary still serving
    ROLLED_BACK = "RolledBack"  # all traffic on stable, canary at zero pods


class CanaryStatus(_Model):
    """What the canary gets now; the spec is never rewritten (docs/rollouts.md)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)
    state: CanaryState = _desc(
        "Pending, Progressing, Weighted, Promoting or RolledBack (informational; the "
        "CanaryReady condition is the contract)."
    )
    traffic: str = _desc("The split in effect, e.g. 'stable 90 / canary 10' or 'mirror 10'.")
    traffic_percent: int = _desc(
        "The canary's share of the live requests in effect (0 while mirroring).", ge=0, le=100
    )
    mirror_percent: int | None = _desc(
        "The share of requests copied to the canary, when mirroring.", default=None
    )
    mode: str = _desc(
        "gateway: exact weights on an HTTPRoute; service: the Service's ready pods set the "
        "split, which is approximate."
    )
    approximate: bool = _desc(
        "True when the split in effect differs from canary.trafficPercent (pod counts "
        "cannot express it, or pods are not Ready yet).",
        default=False,
    )
    replicas: int | None = _desc("Canary pods.", default=None)
    ready_replicas: int | None = _desc("Canary pods Ready.", default=None)
    template_hash: str | None = _desc(
        "Hash of the canary's pod-shaping fields (model, image, env, resources). A rolled-back "
        "canary is retried only when it changes.",
        default=None,
    )
    message: str = _desc("Why: what is awaited, or the rollback's cause.", default="")
    analysis_failures: int | None = _desc(
        "Consecutive breached analysis checks (canary.analysis.failureLimit rolls back).",
        default=None,
    )
    last_analysis_time: str | None = _desc(
        "When the canary analysis last queried Prometheus (RFC 3339); the next check waits "
        "until canary.analysis.intervalSeconds have passed.",
        default=None,
    )


class ModelDeploymentStatus(_Model):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)
    observed_generation: int | None = _desc(
        "The metadata.generation the status describes.", default=None
    )
    conditions: list[Condition] = _desc(
        "Ready (the roll-up), Available, Progressing, Schedulable, AutoscalerReady.",
        default_factory=list,
    )
    replicas: int | None = _desc("Pods of the current Deployment.", default=None)
    ready_replicas: int | None = _desc("Pods ready to serve.", default=None)
    url: str | None = _desc(
        "Where to send requests (the Service, inside the cluster).", default=None
    )
    autoscaler: AutoscalerStatus | None = _desc("The autoscaler's view.", default=None)
    last_cold_start: ColdStart | None = _desc(
        "How long the latest model-server pod took to become Ready, by stage.", default=None
    )
    canary: CanaryStatus | None = _desc(
        "The canary's traffic in effect and its state (docs/rollouts.md).", default=None
    )


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    namespace: str = Field(default="default", max_length=63, pattern=DNS_LABEL_PATTERN)
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] | None = None


class ModelDeployment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    api_version: str = Field(alias="apiVersion", default=API_VERSION)
    kind: str = KIND
    metadata: ObjectMeta
    spec: ModelDeploymentSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def model_name(self) -> str:
        return self.spec.model.name or self.metadata.name

    @classmethod
    def parse(cls, obj: Any, *, local: bool = False) -> ModelDeployment:
        """Validate a raw object; raise the single InvalidSpec error naming the field.

        ``local`` is for `kubeserve serve`: it admits model URIs on this machine.
        """
        if not isinstance(obj, dict):
            raise InvalidSpec("", "a ModelDeployment must be a mapping")
        if obj.get("kind", KIND) != KIND or obj.get("apiVersion", API_VERSION) != API_VERSION:
            got = f"{obj.get('apiVersion')!r:.80} {obj.get('kind')!r:.80}"
            raise InvalidSpec("apiVersion", f"expected {API_VERSION} {KIND}, got {got}")
        _check_plain_data(obj)
        try:
            # Strict JSON validation matches the API server: "3" is not an integer there.
            return cls.model_validate_json(
                json.dumps(obj, default=str), strict=True, context={"local": local}
            )
        except ValidationError as exc:
            raise _invalid_spec(exc) from None


def _invalid_spec(exc: ValidationError) -> InvalidSpec:
    error = exc.errors(include_url=False)[0]
    parts: list[str | int] = [part for part in error["loc"] if not _is_union_tag(part)]
    message = str(error["msg"]).removeprefix("Value error, ")
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, embedded.ShapeError):
        # A problem inside an embedded Kubernetes type: name the exact field below it.
        if cause.path:
            parts.append(cause.path)
        message = cause.message
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    return InvalidSpec(_dotted(*parts), message.replace("\n", " "))


def _dotted(*parts: str | int) -> str:
    """A field path; a key that is not a plain name is quoted, so the path stays one line."""
    return ".".join(
        str(part) if isinstance(part, int) or re.fullmatch(r"[\w./-]+", part) else json.dumps(part)
        for part in parts
        if part != ""
    )


# Far deeper than any real ModelDeployment (an affinity term is about 10 levels down), far
# shallower than what breaks json or pydantic (a RecursionError at a few thousand).
MAX_DEPTH = 48
# YAML aliases can make a small file expand to billions of values ("billion laughs").
MAX_VALUES = 200_000


def _check_plain_data(obj: Any) -> None:
    """JSON-like, finite, bounded: or an InvalidSpec naming where it stops being so."""
    budget = MAX_VALUES
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(obj, ())]
    while stack:
        value, path = stack.pop()
        budget -= 1
        if budget < 0:
            where = _dotted(*path[:6]) or "metadata"
            raise InvalidSpec(where, f"more than {MAX_VALUES} values (YAML aliases expanding?)")
        if len(path) > MAX_DEPTH:
            raise InvalidSpec(_dotted(*path[:6]), f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidSpec(_dotted(*path), f"{value} is not a number")
        if isinstance(value, dict):
            stack.extend((item, (*path, str(key))) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((item, (*path, index)) for index, item in enumerate(value))


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the union member ("str", "int", "function-after[...]") in error paths.
    return isinstance(part, str) and (part in {"str", "int"} or "[" in part)


SCHEMA_MODELS: tuple[type[_Model], ...] = (
    ModelSource,
    EnvVar,
    Toleration,
    Gpu,
    HttpScaling,
    Autoscaling,
    Rollout,
    Analysis,
    Canary,
    ModelDeploymentSpec,
)
