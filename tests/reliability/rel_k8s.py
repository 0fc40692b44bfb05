"""What a real API server would say about an object we render, without an API server.

Two layers, like the server's own:

* the OpenAPI schemas of Kubernetes 1.32 in strict mode (unknown fields rejected), from
  kubernetes-validate, with one compiled validator per kind (kubernetes_validate.validate
  reloads a 1.3 MB definitions file on every call; ``test_cached_validator_matches_library``
  checks the two agree);
* the rules that live in Go validation code and not in any schema: names, label keys and
  values, quantities and resource names, requests <= limits, selectors that match the pod
  template, port names, toleration shapes, owner references.

``problems(obj)`` returns human-readable findings; an empty list means "would be admitted".
Kinds without a bundled schema (KEDA's ScaledObject) get only the second layer.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import jsonschema
import referencing
import referencing.jsonschema

K8S_VERSION = "1.32.0"
_SCHEMAS = importlib.resources.files("kubernetes_validate").joinpath(
    "kubernetes-json-schema", f"v{K8S_VERSION}-local-strict"
)

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUALIFIED_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
# resource.Quantity's grammar: sign, digits with at most one point, one suffix.
QUANTITY = re.compile(
    r"^(?P<num>[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
_SUFFIX = {
    "": 1,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    **{s: Decimal(2) ** (10 * (i + 1)) for i, s in enumerate(["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])},
}
STANDARD_RESOURCES = {"cpu", "memory", "ephemeral-storage", "storage"}
# Every child's name must be an RFC 1035 label: names.py promises one name for all kinds,
# and a Service needs that form.
MAX_CHILD_NAME = 63


# --- layer 1: the OpenAPI schemas ------------------------------------------------------------


def _schema_file(api_version: str, kind: str) -> str:
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    return f"{kind.lower()}-{group_version}.json"


@functools.cache
def _registry() -> referencing.Registry[Any]:
    definitions = json.loads(_SCHEMAS.joinpath("_definitions.json").read_text())
    resource = referencing.Resource.from_contents(
        definitions, default_specification=referencing.jsonschema.DRAFT202012
    )
    return resource @ referencing.Registry()


@functools.cache
def schema_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator | None:
    path = _SCHEMAS.joinpath(_schema_file(api_version, kind))
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    return jsonschema.Draft202012Validator(schema, registry=_registry())


def schema_problems(obj: Mapping[str, Any]) -> list[str]:
    validator = schema_validator(str(obj["apiVersion"]), str(obj["kind"]))
    if validator is None:
        return []
    return [
        f"{'.'.join(map(str, error.absolute_path))}: {error.message[:300]}"
        for error in validator.iter_errors(dict(obj))
    ]


# --- layer 2: the rules in Go validation code ----------------------------------------------


def parse_quantity(value: Any) -> Decimal | None:
    """The value of a Kubernetes quantity, or None when the API server would reject it."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if not isinstance(value, str):
        return None
    match = QUANTITY.match(value)
    if match is None:
        return None
    suffix = match["suffix"] or ""
    try:
        number = Decimal(match["num"])
        scale = Decimal(10) ** int(suffix[1:]) if suffix[:1] in ("e", "E") else _SUFFIX[suffix]
        return number * scale
    except (InvalidOperation, ValueError, OverflowError):
        return None


def qualified_name(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(QUALIFIED_NAME_PART.match(name))


def _label_problems(where: str, labels: Any) -> Iterator[str]:
    if labels is None:
        return
    for key, value in dict(labels).items():
        if not qualified_name(str(key)):
            yield f"{where}: label key {key!r} is not a qualified name"
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            yield f"{where}: label value {value!r} is not a valid label value"


def _selector_problems(where: str, selector: Any) -> Iterator[str]:
    if not selector:
        return
    yield from _label_problems(f"{where}.matchLabels", selector.get("matchLabels"))
    for expr in selector.get("matchExpressions") or []:
        yield from _requirement_problems(f"{where}.matchExpressions", expr, node=False)


def _requirement_problems(where: str, expr: Mapping[str, Any], *, node: bool) -> Iterator[str]:
    key, op, values = expr.get("key", ""), expr.get("operator"), expr.get("values") or []
    if not qualified_name(str(key)):
        yield f"{where}: key {key!r} is not a qualified name"
    if op in ("In", "NotIn") and not values:
        yield f"{where}: operator {op} needs values"
    elif op in ("Exists", "DoesNotExist") and values:
        yield f"{where}: operator {op} takes no values"
    elif op in ("Gt", "Lt"):
        if not node:
            yield f"{where}: operator {op} is only for node selectors"
        elif len(values) != 1 or not re.fullmatch(r"-?[0-9]+", str(values[0])):
            yield f"{where}: operator {op} needs one integer value"
    elif op not in ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"):
        yield f"{where}: unknown operator {op!r}"
    if not node:
        for value in values:
            if not LABEL_VALUE.match(str(value)) or len(str(value)) > 63:
                yield f"{where}: value {value!r} is not a valid label value"


def _resources_problems(where: str, resources: Mapping[str, Any]) -> Iterator[str]:
    parsed: dict[str, dict[str, Decimal]] = {}
    for section in ("requests", "limits"):
        parsed[section] = {}
        for name, raw in (resources.get(section) or {}).items():
            if name not in STANDARD_RESOURCES and not name.startswith("hugepages-"):
                if "/" not in name or not qualified_name(name):
                    yield f"{where}.{section}: {name!r} is not a standard or qualified resource"
                elif name.split("/")[0].endswith("kubernetes.io"):
                    yield f"{where}.{section}: {name!r} uses a reserved domain"
            value = parse_quantity(raw)
            if value is None:
                yield f"{where}.{section}.{name}: {raw!r} is not a quantity"
            elif value < 0:
                yield f"{where}.{section}.{name}: must be >= 0"
            elif "/" in name and value != value.to_integral_value():
                yield f"{where}.{section}.{name}: extended resources must be whole numbers"
            else:
                parsed[section][name] = value
    for name, request in parsed["requests"].items():
        limit = parsed["limits"].get(name)
        if limit is not None and request > limit:
            yield f"{where}.requests.{name}: must be <= the limit"
        if "/" in name and limit != request:
            yield f"{where}.requests.{name}: an extended resource's request must equal its limit"


def _container_problems(
    where: str, container: Mapping[str, Any], volumes: set[str]
) -> Iterator[str]:
    name = container.get("name", "")
    if not DNS1123_LABEL.match(name) or len(name) > 63:
        yield f"{where}: name {name!r} is not a DNS-1123 label"
    if not container.get("image"):
        yield f"{where}: image must not be empty"
    port_names: set[str] = set()
    for port in container.get("ports") or []:
        pname = port.get("name")
        if pname is not None:
            if len(pname) > 15 or not IANA_SVC_NAME.match(pname) or "--" in pname:
                yield f"{where}.ports: {pname!r} is not an IANA service name"
            if not re.search("[a-z]", pname):
                yield f"{where}.ports: {pname!r} needs a letter"
            if pname in port_names:
                yield f"{where}.ports: duplicate name {pname!r}"
            port_names.add(pname)
        if not 0 < int(port.get("containerPort", 0)) < 65536:
            yield f"{where}.ports: containerPort out of range"
    env_names: set[str] = set()
    for var in container.get("env") or []:
        vname = var.get("name", "")
        if not vname or "=" in vname or not vname.isprintable() or not vname.isascii():
            yield f"{where}.env: {vname!r} is not a valid variable name"
        if vname in env_names:
            yield f"{where}.env: duplicate {vname!r} (server-side apply keys env by name)"
        env_names.add(vname)
        source = var.get("valueFrom")
        if source is not None:
            if var.get("value"):
                yield f"{where}.env.{vname}: value and valueFrom are exclusive"
            if len(source) != 1:
                yield f"{where}.env.{vname}: valueFrom needs exactly one source"
    for mount in container.get("volumeMounts") or []:
        if mount.get("name") not in volumes:
            yield f"{where}.volumeMounts: {mount.get('name')!r} is not a volume"
    yield from _resources_problems(f"{where}.resources", container.get("resources") or {})


def _pod_problems(where: str, pod: Mapping[str, Any]) -> Iterator[str]:
    volumes = [v.get("name", "") for v in pod.get("volumes") or []]
    for vname in volumes:
        if not DNS1123_LABEL.match(vname) or len(vname) > 63:
            yield f"{where}.volumes: {vname!r} is not a DNS-1123 label"
    if len(set(volumes)) != len(volumes):
        yield f"{where}.volumes: duplicate names"
    names: list[str] = []
    for section in ("initContainers", "containers"):
        for index, container in enumerate(pod.get(section) or []):
            names.append(container.get("name", ""))
            yield from _container_problems(f"{where}.{section}[{index}]", container, set(volumes))
    if len(set(names)) != len(names):
        yield f"{where}: duplicate container names"
    yield from _label_problems(f"{where}.nodeSelector", pod.get("nodeSelector"))
    for index, tol in enumerate(pod.get("tolerations") or []):
        twhere = f"{where}.tolerations[{index}]"
        key, op = tol.get("key", ""), tol.get("operator", "Equal")
        if key and not qualified_name(key):
            yield f"{twhere}: key {key!r} is not a qualified name"
        if not key and op != "Exists":
            yield f"{twhere}: an empty key needs operator Exists"
        if op == "Exists" and tol.get("value"):
            yield f"{twhere}: operator Exists takes no value"
        if tol.get("value") and not LABEL_VALUE.match(str(tol["value"])):
            yield f"{twhere}: value is not a valid label value"
        if tol.get("tolerationSeconds") is not None and tol.get("effect") != "NoExecute":
            yield f"{twhere}: tolerationSeconds needs effect NoExecute"
    node_affinity = (pod.get("affinity") or {}).get("nodeAffinity") or {}
    required = node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    if required and not required.get("nodeSelectorTerms"):
        yield f"{where}.affinity: required node affinity needs at least one term"
    for term in required.get("nodeSelectorTerms") or []:
        for expr in term.get("matchExpressions") or []:
            yield from _requirement_problems(f"{where}.affinity", expr, node=True)
    runtime_class = pod.get("runtimeClassName")
    if runtime_class is not None and not DNS1123_SUBDOMAIN.match(runtime_class):
        yield f"{where}.runtimeClassName: {runtime_class!r} is not a DNS subdomain"


def _int_or_percent(value: Any) -> tuple[int, bool] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, False
    if isinstance(value, str) and re.fullmatch(r"[0-9]+%", value):
        return int(value[:-1]), True
    return None


def _deployment_problems(obj: Mapping[str, Any]) -> Iterator[str]:
    spec = obj.get("spec", {})
    selector = spec.get("selector") or {}
    template_labels = spec.get("template", {}).get("metadata", {}).get("labels") or {}
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        yield "spec.selector: must not be empty"
    for key, value in (selector.get("matchLabels") or {}).items():
        if template_labels.get(key) != value:
            yield "spec.selector: does not match the template's labels"
    yield from _selector_problems("spec.selector", selector)
    yield from _label_problems("spec.template.metadata.labels", template_labels)
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate" and "rollingUpdate" in strategy:
        yield "spec.strategy: rollingUpdate is only for RollingUpdate"
    rolling = strategy.get("rollingUpdate") or {}
    surge, unavailable = rolling.get("maxSurge"), rolling.get("maxUnavailable")
    parsed = [_int_or_percent(v) for v in (surge, unavailable) if v is not None]
    if any(p is None for p in parsed):
        yield "spec.strategy.rollingUpdate: not an int or percentage"
    elif (
        surge is not None
        and unavailable is not None
        and all(p is not None and p[0] == 0 for p in parsed)
    ):
        yield "spec.strategy.rollingUpdate: maxSurge and maxUnavailable may not both be 0"
    for value in (surge, unavailable):
        p = _int_or_percent(value) if value is not None else None
        if p is not None and p[1] and p[0] > 100 and value is unavailable:
            yield "spec.strategy.rollingUpdate.maxUnavailable: must be <= 100%"
    yield from _pod_problems("spec.template.spec", spec.get("template", {}).get("spec", {}))


def _service_problems(obj: Mapping[str, Any]) -> Iterator[str]:
    spec = obj.get("spec", {})
    ports = spec.get("ports") or []
    if not ports:
        yield "spec.ports: a ClusterIP Service needs a port"
    names = [p.get("name") for p in ports]
    if len(ports) > 1 and not all(names):
        yield "spec.ports: every port needs a name when there are several"
    if len(set(names)) != len(names):
        yield "spec.ports: duplicate names"
    for port in ports:
        if port.get("name") and not DNS1123_LABEL.match(port["name"]):
            yield f"spec.ports: {port['name']!r} is not a DNS-1123 label"
        target = port.get("targetPort")
        if isinstance(target, str) and (len(target) > 15 or not IANA_SVC_NAME.match(target)):
            yield f"spec.ports: targetPort {target!r} is not an IANA service name"
    yield from _label_problems("spec.selector", spec.get("selector"))


def _hpa_problems(obj: Mapping[str, Any]) -> Iterator[str]:
    spec = obj.get("spec", {})
    low, high = spec.get("minReplicas", 1), spec.get("maxReplicas", 0)
    if low < 1:
        yield "spec.minReplicas: must be >= 1 (HPAScaleToZero is alpha)"
    if high < low:
        yield "spec.maxReplicas: must be >= minReplicas"
    for metric in spec.get("metrics") or []:
        target = (metric.get(metric.get("type", "").lower()) or {}).get("target") or {}
        if "averageUtilization" in target and target["averageUtilization"] < 1:
            yield "spec.metrics: averageUtilization must be >= 1"


def _pdb_problems(obj: Mapping[str, Any]) -> Iterator[str]:
    spec = obj.get("spec", {})
    if ("minAvailable" in spec) == ("maxUnavailable" in spec):
        yield "spec: set exactly one of minAvailable and maxUnavailable"
    yield from _selector_problems("spec.selector", spec.get("selector"))


def _network_policy_problems(obj: Mapping[str, Any]) -> Iterator[str]:
    spec = obj.get("spec", {})
    yield from _selector_problems("spec.podSelector", spec.get("podSelector"))
    for rule in spec.get("ingress") or []:
        for peer in rule.get("from") or []:
            if not peer:
                yield "spec.ingress.from: a peer needs a selector or an ipBlock"
            if "ipBlock" in peer and len(peer) > 1:
                yield "spec.ingress.from: ipBlock is exclusive with selectors"
            for key in ("podSelector", "namespaceSelector"):
                yield from _selector_problems(f"spec.ingress.from.{key}", peer.get(key))
            block = peer.get("ipBlock")
            if block is not None and not re.fullmatch(
                r"[0-9a-fA-F:.]+/[0-9]{1,3}", str(block.get("cidr", ""))
            ):
                yield "spec.ingress.from.ipBlock: cidr is not a CIDR"


_KIND_RULES = {
    "Deployment": _deployment_problems,
    "Service": _service_problems,
    "HorizontalPodAutoscaler": _hpa_problems,
    "PodDisruptionBudget": _pdb_problems,
    "NetworkPolicy": _network_policy_problems,
}


def semantic_problems(obj: Mapping[str, Any]) -> list[str]:
    meta = obj.get("metadata", {})
    found: list[str] = []
    name = str(meta.get("name", ""))
    if len(name) > MAX_CHILD_NAME or not DNS1035_LABEL.match(name):
        found.append(f"metadata.name: {name!r} is not an RFC 1035 label of <= 63 characters")
    namespace = str(meta.get("namespace", ""))
    if len(namespace) > 63 or not DNS1123_LABEL.match(namespace):
        found.append(f"metadata.namespace: {namespace!r} is not a DNS-1123 label")
    found.extend(_label_problems("metadata.labels", meta.get("labels")))
    for key in meta.get("annotations") or {}:
        if not qualified_name(key):
            found.append(f"metadata.annotations: {key!r} is not a qualified name")
    refs = meta.get("ownerReferences") or []
    if sum(1 for ref in refs if ref.get("controller")) > 1:
        found.append("metadata.ownerReferences: more than one controller")
    for ref in refs:
        if not ref.get("uid") or not ref.get("name") or not ref.get("kind"):
            found.append("metadata.ownerReferences: uid, name and kind are required")
    rules = _KIND_RULES.get(str(obj.get("kind")))
    if rules is not None:
        found.extend(rules(obj))
    return found


def problems(obj: Mapping[str, Any]) -> list[str]:
    """Everything the API server would reject this object for; [] when it would admit it."""
    return [*schema_problems(obj), *semantic_problems(obj)]
