"""Hypothesis strategies for ModelDeployment objects: valid, nearly valid and hostile.

Every field is absent, plausible (mostly valid, sometimes subtly not) or, with ``garbage``,
a random JSON value of the wrong type. ``unknown`` sprinkles fields the API does not know.
The same builder feeds the render/reconcile fuzzing (everything on) and the CRD/pydantic
agreement corpus (known fields only: the API server prunes unknown ones before CEL runs).
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import strategies as st

Strategy = st.SearchStrategy[Any]


@st.composite
def weighted(draw: st.DrawFn, common: Strategy, rare: Strategy, one_in: int = 5) -> Any:
    """``rare`` about once in ``one_in`` draws (st.one_of would make it one in two)."""
    # Not 0 or one_in - 1: Hypothesis favours the ends of a range.
    return draw(rare if draw(st.integers(0, one_in - 1)) == one_in // 2 else common)


# --- building blocks ------------------------------------------------------------------------

JSON_SCALARS: Strategy = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
JSON_VALUES: Strategy = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)

_LABEL_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
DNS_LABEL: Strategy = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?\Z")


def _label_from(seed: int, size: int) -> str:
    # One draw per label, not one per character: long names would dominate generation time.
    rng = random.Random(seed)
    if size == 1:
        return rng.choice(_LABEL_CHARS)
    inner = "".join(rng.choice(_LABEL_CHARS + "-") for _ in range(size - 2))
    return rng.choice(_LABEL_CHARS) + inner + rng.choice(_LABEL_CHARS)


@st.composite
def long_dns_label(draw: st.DrawFn, max_len: int = 63) -> str:
    size = draw(st.sampled_from([1, 2, 5, 12, 30, 62, 63]))
    return _label_from(draw(st.integers(0, 2**32)), min(size, max_len))


@st.composite
def dns_subdomain(draw: st.DrawFn, max_len: int = 253) -> str:
    """A valid DNS-1123 subdomain, often long and dotted, up to ``max_len`` characters."""
    target = min(draw(st.sampled_from([3, 8, 12, 40, 63, 64, 120, 200, 252, 253])), max_len)
    rng = random.Random(draw(st.integers(0, 2**32)))
    parts: list[str] = []
    while True:
        used = len(".".join(parts))
        room = target - used - (1 if parts else 0)
        if room < 1:
            break
        parts.append(_label_from(rng.getrandbits(32), min(63, room, rng.choice([1, 8, 63]))))
    return ".".join(parts)


HOSTILE_NAMES: Strategy = st.one_of(
    st.just(""),
    st.text(min_size=1, max_size=300),  # unicode, spaces, anything
    st.sampled_from(
        [
            "UPPER",
            "under_score",
            "-leading",
            "trailing-",
            "a..b",
            ".dot",
            "a" * 254,
            "ä-umlaut",
            "x" * 64,
            "1" * 63,
            "0",
            "a/b",
            "a b",
            "modèle",
            "\u0430pple",  # Cyrillic a
        ]
    ),
)
NAMES: Strategy = st.one_of(dns_subdomain(), DNS_LABEL, HOSTILE_NAMES)
NAMESPACES: Strategy = st.one_of(
    st.just("ml"), long_dns_label(), st.sampled_from(["", "UPPER", "a.b", "n" * 64])
)

# --- model URIs -----------------------------------------------------------------------------

SCHEMES = ["s3", "gs", "https", "pvc", "http", "file", "ftp", "S3", "hdfs", "", "javascript"]
USERINFO = ["", "", "", "user:pass@", "AKIA123:secret@", "token@", "@", ":@", "user@"]
HOSTS: Strategy = st.one_of(
    DNS_LABEL,
    st.sampled_from(["bucket", "host.example", "127.0.0.1:9000", "", "b%20x", "bücket", "[::1]"]),
    st.text(max_size=10),
)
SEGMENTS: Strategy = st.one_of(
    DNS_LABEL,
    st.sampled_from(["..", ".", "%2e%2e", "model.onnx", "", "a b", "ü", "~user", "?x=1", "#f"]),
    st.text(max_size=8),
)


@st.composite
def model_uris(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 9)) == 0:
        return str(draw(st.text(max_size=40)))
    scheme = draw(st.sampled_from(SCHEMES))
    sep = draw(st.sampled_from(["://", "://", "://", ":/", ":", "///"]))
    path = "/".join(draw(st.lists(SEGMENTS, max_size=5)))
    uri = f"{scheme}{sep}{draw(st.sampled_from(USERINFO))}{draw(HOSTS)}/{path}"
    if draw(st.integers(0, 9)) == 0:
        uri += draw(st.sampled_from(["?X-Amz-Signature=abc", "?token=t", "#frag", "?v=2"]))
    if draw(st.integers(0, 14)) == 0:
        uri += "/" + "p" * draw(st.sampled_from([100, 2000, 2100, 5000]))
    return uri


# Bucket names are 3 characters or more (S3, GCS and the storage initializer); hosts and
# claims may be a single character.
BUCKETS: Strategy = st.one_of(
    st.from_regex(r"\A[a-z0-9][-a-z0-9]{1,10}[a-z0-9]\Z"), st.just("host.example")
)
_URI_PATHS = st.sampled_from(["", "m", "models/resnet/1/", "m.tar.gz", "a/b/c.onnx"])
VALID_URIS: Strategy = st.one_of(
    st.builds(
        lambda scheme, host, path: f"{scheme}://{host}/{path}",
        st.sampled_from(["s3", "gs"]),
        BUCKETS,
        _URI_PATHS,
    ),
    st.builds(
        lambda scheme, host, path: f"{scheme}://{host}/{path}",
        st.sampled_from(["https", "pvc"]),
        st.one_of(DNS_LABEL, st.just("host.example")),
        _URI_PATHS,
    ),
)

# --- spec fields ----------------------------------------------------------------------------

QUANTITIES: Strategy = st.one_of(
    st.sampled_from(["1", "500m", "2Gi", "1.5", "0", "100Mi", "1e3", "0.5Gi", "128974848"]),
    st.integers(min_value=0, max_value=64),
    st.sampled_from(["-1", "1.2.3", "1kM", "lots", "", "1iB", "1 Gi", ".", "1e", "+1", "1e400"]),
    st.integers(min_value=-5, max_value=10**20),
)
GOOD_QUANTITIES: Strategy = st.one_of(
    st.sampled_from(["1", "500m", "2Gi", "1.5", "100Mi", "1e3", "0.5Gi", "128974848"]),
    st.integers(min_value=1, max_value=64),
)
GOOD_RESOURCE_NAMES: Strategy = st.sampled_from(
    ["cpu", "memory", "ephemeral-storage", "example.com/widget"]
)
RESOURCE_NAMES: Strategy = st.sampled_from(
    [
        "cpu",
        "memory",
        "ephemeral-storage",
        "example.com/widget",
        "hugepages-2Mi",
        "foo",
        "kubernetes.io/x",
        "a/b/c",
        "nvidia.com/gpu",
        "CPU",
    ]
)
GOOD_LABEL_KEYS: Strategy = st.sampled_from(
    ["disk", "zone", "example.com/tier", "topology.kubernetes.io/zone", "a.b-c_d"]
)
GOOD_LABEL_VALUES: Strategy = st.one_of(DNS_LABEL, st.sampled_from(["", "ssd", "A_b.C"]))
GOOD_ENV_NAMES: Strategy = st.sampled_from(["LOG", "A_B", "x.y", "OMP_NUM_THREADS", "_u"])
GOOD_IMAGES: Strategy = st.sampled_from(
    ["registry.example/model:1", "busybox", "ghcr.io/a/b@sha256:" + "a" * 64]
)
LABEL_KEYS: Strategy = st.one_of(
    st.sampled_from(["disk", "zone", "example.com/tier", "topology.kubernetes.io/zone"]),
    st.sampled_from(["not a key", "-x", "a/b/c", "x" * 64, "ex.com/", "/x", ""]),
    DNS_LABEL,
)
LABEL_VALUES: Strategy = st.one_of(
    DNS_LABEL, st.sampled_from(["", "ssd", "a b", "-x", "v" * 64, "A_b.C"])
)
IMAGES: Strategy = st.one_of(
    st.sampled_from(["registry.example/model:1", "busybox", "ghcr.io/a/b@sha256:" + "a" * 64]),
    st.text(max_size=20),
    st.just("i" * 513),
)
ENV_NAMES: Strategy = st.one_of(
    st.sampled_from(["LOG", "A_B", "x.y", "-z", "1BAD", "a=b", "", "ÄÖ", "OMP_NUM_THREADS"]),
    st.from_regex(r"\A[A-Z_][A-Z0-9_]{0,8}\Z"),
)
SECRET_REFS: Strategy = st.fixed_dictionaries(
    {
        "secretKeyRef": st.fixed_dictionaries(
            {"name": DNS_LABEL, "key": st.sampled_from(["k", "a.b"])}
        )
    }
)
VALUE_FROM_VALID: Strategy = st.one_of(
    SECRET_REFS,
    st.just({"fieldRef": {"fieldPath": "metadata.name"}}),
    st.just({"configMapKeyRef": {"name": "cm", "key": "k"}}),
    st.just({"resourceFieldRef": {"resource": "limits.cpu"}}),
)
VALUE_FROM_HOSTILE: Strategy = st.one_of(
    st.just({}),
    st.just({"secretKeyRef": {"name": "s", "key": "k"}, "fieldRef": {"fieldPath": "x"}}),
    st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=2),
)
SELECTORS_VALID: Strategy = st.fixed_dictionaries(
    {},
    optional={
        "matchLabels": st.dictionaries(
            st.sampled_from(["app", "team", "example.com/x"]), DNS_LABEL, max_size=2
        ),
        "matchExpressions": st.lists(
            st.fixed_dictionaries(
                {
                    "key": st.sampled_from(["app", "tier"]),
                    "operator": st.just("In"),
                    "values": st.lists(DNS_LABEL, min_size=1, max_size=2),
                }
            ),
            max_size=1,
        ),
    },
)
PEERS_VALID: Strategy = st.one_of(
    st.fixed_dictionaries({"podSelector": SELECTORS_VALID}),
    st.fixed_dictionaries({"namespaceSelector": SELECTORS_VALID}),
    st.fixed_dictionaries({"podSelector": SELECTORS_VALID, "namespaceSelector": SELECTORS_VALID}),
    st.just({"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}),
)
PEERS_HOSTILE: Strategy = st.one_of(
    st.just({}),
    st.just({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}),
    st.just({"podSelector": {"matchLabels": {"bad key": "v"}}}),
    st.dictionaries(st.text(max_size=6), JSON_VALUES, min_size=1, max_size=2),
)
NODE_REQUIREMENTS: Strategy = st.fixed_dictionaries(
    {
        "key": st.sampled_from(["kubernetes.io/arch", "zone", "example.com/disk"]),
        "operator": st.sampled_from(["In", "NotIn"]),
        "values": st.lists(DNS_LABEL, min_size=1, max_size=2),
    }
)
AFFINITY_VALID: Strategy = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {
            "nodeAffinity": st.fixed_dictionaries(
                {
                    "requiredDuringSchedulingIgnoredDuringExecution": st.fixed_dictionaries(
                        {
                            "nodeSelectorTerms": st.lists(
                                st.fixed_dictionaries(
                                    {"matchExpressions": st.lists(NODE_REQUIREMENTS, max_size=2)}
                                ),
                                min_size=1,
                                max_size=2,
                            )
                        }
                    )
                }
            )
        }
    ),
    st.just(
        {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": {"app": "x"}},
                            "topologyKey": "kubernetes.io/hostname",
                        },
                    }
                ]
            }
        }
    ),
)


def _node_term(expr: dict[str, Any]) -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [expr]}]
            }
        }
    }


AFFINITY_HOSTILE: Strategy = st.one_of(
    st.dictionaries(st.text(max_size=8), JSON_VALUES, min_size=1, max_size=2),
    st.sampled_from(
        [
            _node_term({"key": "zone", "operator": "In", "values": []}),
            _node_term({"key": "zone", "operator": "In"}),
            _node_term({"key": "zone", "operator": "Exists", "values": ["a"]}),
            _node_term({"key": "mem", "operator": "Gt", "values": ["lots"]}),
            _node_term({"key": "mem", "operator": "Gt", "values": ["1", "2"]}),
            _node_term({"key": "bad key", "operator": "Exists"}),
            _node_term({"key": "zone", "operator": "Near", "values": ["a"]}),
            _node_term({"operator": "Exists"}),
            {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 101, "podAffinityTerm": {"topologyKey": "zone"}}
                    ]
                }
            },
            {
                "podAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"app": "x"}}}
                    ]
                }
            },
            {
                "podAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"app": "a b"}}, "topologyKey": "z"}
                    ]
                }
            },
        ]
    ),
    st.just({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}),
    st.just({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []}}),
    st.just({"nodeAffinity": []}),
)


class SpecBuilder:
    """One strategy per field: mostly valid, sometimes a near miss, sometimes garbage."""

    def __init__(
        self,
        *,
        garbage: bool,
        unknown: bool,
        hostile_free_form: bool,
        one_in: int = 25,
        decidable: bool = False,
    ) -> None:
        self.garbage = garbage
        self.unknown = unknown
        self.hostile_free_form = hostile_free_form
        self.one_in = one_in
        # Only what the CRD can decide: valid map keys, quantities that compare fine.
        self.decidable = decidable

    def field(self, valid: Strategy, *near_misses: Strategy, one_in: int = 0) -> Strategy:
        """``valid`` mostly; a near miss or garbage about once in ``one_in``."""
        wrong = [*near_misses, *([JSON_VALUES] if self.garbage else [])]
        if not wrong:
            return valid
        return weighted(valid, st.one_of(*wrong), one_in=one_in or self.one_in)

    def obj(self, required: dict[str, Strategy], optional: dict[str, Strategy]) -> Strategy:
        base = st.fixed_dictionaries(required, optional=optional)
        if not self.unknown:
            return base
        extra = st.dictionaries(
            st.sampled_from(["replica", "Runtime", "uri2", "extra", "gpus", "x-y"]),
            JSON_SCALARS,
            min_size=1,
            max_size=1,
        )
        with_extra = st.builds(lambda a, b: {**b, **a}, base, extra)
        return weighted(base, with_extra, one_in=30)

    def free(self, valid: Strategy, hostile: Strategy) -> Strategy:
        return self.field(valid, hostile) if self.hostile_free_form else valid

    # --- the spec ---------------------------------------------------------------------

    def model(self) -> Strategy:
        anything = self.obj(
            {"uri": self.field(VALID_URIS, model_uris())},
            {
                "name": self.field(
                    st.sampled_from(["resnet", "m_v2", "m.v1", "A-1"]),
                    st.sampled_from(["-bad", "a" * 129, "名字", ""]),
                ),
                "credentialsSecret": self.field(dns_subdomain(), HOSTILE_NAMES),
            },
        )
        # Mostly coherent: no credentialsSecret with pvc:// (the API refuses the pair).
        return weighted(
            anything.filter(
                lambda m: (
                    not (
                        isinstance(m, dict)
                        and "credentialsSecret" in m
                        and str(m.get("uri", "")).startswith("pvc://")
                    )
                )
            ),
            anything,
        )

    def resources(self) -> Strategy:
        if self.decidable:
            # Requests or limits, not both (no comparison); no extended resource requested.
            requests = st.dictionaries(
                st.sampled_from(["cpu", "memory", "ephemeral-storage"]), QUANTITIES, max_size=3
            )
            limits = st.dictionaries(
                st.sampled_from(["cpu", "memory", "example.com/widget"]),
                st.one_of(st.integers(0, 64), st.sampled_from(["1", "2", "lots", "-1", "1.2.3"])),
                max_size=3,
            )
            return st.one_of(
                self.obj({}, {"requests": self.field(requests)}),
                self.obj({}, {"limits": self.field(limits)}),
            )
        section = self.field(
            st.dictionaries(GOOD_RESOURCE_NAMES, GOOD_QUANTITIES, max_size=3),
            st.dictionaries(RESOURCE_NAMES, QUANTITIES, min_size=1, max_size=3),
        )
        return self.obj({}, {"requests": section, "limits": section})

    def env(self) -> Strategy:
        name = self.field(GOOD_ENV_NAMES, ENV_NAMES)
        value = self.field(st.text(max_size=16))
        source = self.free(VALUE_FROM_VALID, VALUE_FROM_HOSTILE)
        # Mostly one of value and valueFrom; sometimes both or neither.
        var = weighted(
            st.one_of(
                self.obj({"name": name}, {"value": value}),
                self.obj({"name": name, "valueFrom": source}, {}),
            ),
            self.obj({"name": name}, {"value": value, "valueFrom": source}),
        )
        return self.field(st.lists(var, max_size=3), st.lists(var, min_size=129, max_size=130))

    def tolerations(self) -> Strategy:
        anything = self.obj(
            {},
            {
                "key": self.field(GOOD_LABEL_KEYS, LABEL_KEYS),
                "operator": self.field(
                    st.sampled_from(["Exists", "Equal"]), st.sampled_from(["equal", ""])
                ),
                "value": self.field(GOOD_LABEL_VALUES, LABEL_VALUES),
                "effect": self.field(
                    st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute"]),
                    st.sampled_from(["", "Bad"]),
                ),
                "tolerationSeconds": self.field(st.integers(0, 3600), st.integers(-10, 10**12)),
            },
        )
        # Mostly what the API server admits: a key unless Exists, no value with Exists,
        # tolerationSeconds only with NoExecute.
        effects = st.sampled_from(["NoSchedule", "PreferNoSchedule", "NoExecute"])
        coherent = st.one_of(
            st.fixed_dictionaries(
                {"key": GOOD_LABEL_KEYS},
                optional={
                    "operator": st.just("Equal"),
                    "value": GOOD_LABEL_VALUES,
                    "effect": effects,
                },
            ),
            st.fixed_dictionaries(
                {"operator": st.just("Exists")},
                optional={"key": GOOD_LABEL_KEYS, "effect": effects},
            ),
            st.fixed_dictionaries(
                {
                    "key": GOOD_LABEL_KEYS,
                    "effect": st.just("NoExecute"),
                    "tolerationSeconds": st.integers(0, 3600),
                },
                optional={"operator": st.sampled_from(["Exists"])},
            ),
        )
        return self.field(st.lists(weighted(coherent, anything), max_size=3))

    def gpu(self) -> Strategy:
        return self.obj(
            {},
            {
                "count": self.field(st.integers(1, 8), st.integers(-1, 20), st.just(0.5)),
                "resourceName": self.field(
                    st.sampled_from(["nvidia.com/gpu", "amd.com/gpu"]),
                    st.sampled_from(["nvidia.com/mig-1g.10gb", "gpu", "A/B", "example.com/"]),
                ),
                "product": self.field(
                    st.lists(st.sampled_from(["NVIDIA-A100-SXM4-80GB", "NVIDIA-L4"]), max_size=2),
                    st.lists(st.sampled_from(["", "x" * 64, "a b", "-x"]), max_size=2),
                ),
                "minMemoryMiB": self.field(st.integers(1, 200_000), st.integers(-1, 2**40)),
                "migProfile": self.field(
                    st.sampled_from(["1g.10gb", "3g.40gb", "1g.10gb+me"]),
                    st.sampled_from(["big", "8g.1gb"]),
                ),
                "runtimeClassName": self.field(
                    st.sampled_from(["nvidia", "a.b"]), st.sampled_from(["NVIDIA", "_x"])
                ),
            },
        )

    def autoscaling(self) -> Strategy:
        metric = self.obj(
            {
                "type": self.field(
                    st.sampled_from(
                        [
                            "cpu",
                            "memory",
                            "requestsPerSecond",
                            "queueLatency",
                            "concurrency",
                            "gpuUtilization",
                        ]
                    ),
                    st.just("magic"),
                ),
                "target": self.field(
                    st.integers(1, 1000),
                    st.integers(-1, 2_000_000),
                    st.floats(min_value=0, max_value=200),
                ),
            },
            {
                "query": self.field(
                    st.just("sum(rate(ingress_requests_total[1m]))"),
                    st.just(""),
                    st.just("q" * 5000),
                )
            },
        )
        return self.obj(
            {"maxReplicas": self.field(st.integers(1, 20), st.integers(-1, 1100))},
            {
                "minReplicas": self.field(st.integers(0, 5), st.integers(-1, 1100)),
                "engine": self.field(
                    st.sampled_from(["hpa", "keda"]), st.sampled_from(["HPA", "knative"])
                ),
                "metrics": self.field(st.lists(metric, min_size=1, max_size=3), st.just([])),
                "behavior": self.obj(
                    {},
                    {
                        "scaleDownStabilizationSeconds": self.field(
                            st.integers(0, 600), st.integers(-1, 4000)
                        )
                    },
                ),
            },
        )

    def rollout(self) -> Strategy:
        int_or_percent = self.field(
            st.one_of(st.integers(0, 5), st.sampled_from(["25%", "0%", "100%"])),
            st.sampled_from(["150%", "50", "x%", "-1", "1.5"]),
        )
        return self.obj(
            {},
            {
                "strategy": self.field(
                    st.sampled_from(["RollingUpdate", "Recreate"]), st.just("Canary")
                ),
                "maxSurge": int_or_percent,
                "maxUnavailable": int_or_percent,
            },
        )

    def spec(self) -> Strategy:
        return self.obj(
            {
                "runtime": self.field(
                    st.sampled_from(["tfserving", "torchserve", "onnxruntime"]),
                    st.sampled_from(["triton", "", "ONNXRUNTIME"]),
                ),
                "model": self.field(self.model(), one_in=40),
            },
            {
                "replicas": self.field(
                    st.integers(0, 5), st.integers(-1, 1001), st.just(10**30), st.just("3")
                ),
                "resources": self.field(self.resources()),
                "image": self.field(GOOD_IMAGES, IMAGES),
                "env": self.env(),
                "nodeSelector": self.field(
                    st.dictionaries(GOOD_LABEL_KEYS, GOOD_LABEL_VALUES, max_size=2),
                    st.dictionaries(
                        GOOD_LABEL_KEYS if self.decidable else LABEL_KEYS,
                        LABEL_VALUES,
                        min_size=1,
                        max_size=2,
                    ),
                ),
                "tolerations": self.tolerations(),
                "affinity": self.free(AFFINITY_VALID, AFFINITY_HOSTILE),
                "gpu": self.field(self.gpu()),
                "autoscaling": self.field(self.autoscaling()),
                "rollout": self.field(self.rollout()),
                "batching": self.field(
                    self.obj(
                        {},
                        {
                            "maxBatchSize": self.field(st.integers(1, 64), st.integers(0, 2000)),
                            "maxDelayMs": self.field(st.floats(0, 100), st.floats(-1, 20_000)),
                        },
                    )
                ),
                "sessionOptions": self.field(
                    self.obj(
                        {},
                        {
                            "intraOpThreads": self.field(st.integers(0, 8), st.integers(-1, 300)),
                            "interOpThreads": self.field(st.integers(0, 8), st.integers(-1, 300)),
                            "graphOptimizationLevel": self.field(
                                st.sampled_from(["disable", "basic", "extended", "all"]),
                                st.just("max"),
                            ),
                        },
                    )
                ),
                "networkPolicy": self.field(
                    self.obj(
                        {},
                        {
                            "enabled": self.field(st.booleans()),
                            "from": self.field(
                                st.lists(self.free(PEERS_VALID, PEERS_HOSTILE), max_size=2)
                            ),
                        },
                    )
                ),
            },
        )

    def document(self) -> Strategy:
        metadata = st.fixed_dictionaries(
            {
                "name": weighted(dns_subdomain(), HOSTILE_NAMES, one_in=12),
                # Behind an API server the namespace always exists, so it is a DNS label.
                "namespace": (
                    st.one_of(st.just("ml"), long_dns_label())
                    if self.decidable
                    else weighted(st.just("ml"), NAMESPACES, one_in=12)
                ),
            },
            optional={
                "uid": st.uuids().map(str),
                "generation": st.integers(1, 10**6),
            },
        )
        return st.fixed_dictionaries(
            {
                "apiVersion": st.just("kubeserve.io/v1alpha1"),
                "kind": st.just("ModelDeployment"),
                "metadata": metadata,
                "spec": self.field(self.spec(), one_in=40),
            }
        )


def model_deployments(
    *,
    garbage: bool = True,
    unknown: bool = True,
    hostile_free_form: bool = True,
    decidable: bool = False,
) -> Strategy:
    return SpecBuilder(
        garbage=garbage,
        unknown=unknown,
        hostile_free_form=hostile_free_form,
        decidable=decidable,
    ).document()
