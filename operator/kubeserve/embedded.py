"""Checks for the Kubernetes types a ModelDeployment embeds as free-form maps.

spec.affinity (an Affinity), spec.env[].valueFrom (an EnvVarSource) and
spec.networkPolicy.from[] (NetworkPolicyPeers) are copied into the objects we apply. The CRD
keeps them schemaless (x-kubernetes-preserve-unknown-fields), so without these checks a typo
there would pass `kubectl apply` and then fail every apply of the Deployment or
NetworkPolicy. The checks follow the Kubernetes API types and the API server's validation
of them: known fields, types, operators, label syntax. Each failure names the path below the
field (``ShapeError.path``), which api.py appends to the field it reports.

Label syntax (qualified names, label values) lives here too; api.py uses it for
spec.nodeSelector and tolerations.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
_LABEL_VALUE = re.compile(LABEL_VALUE_PATTERN)
# A qualified name (label key, taint key, extended resource): [prefix/]name, prefix a DNS
# subdomain of at most 253 characters, name at most 63. Both halves as one regex, for CEL.
QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$"
)
QUALIFIED_NAME_MAX = 253 + 1 + 63


class ShapeError(ValueError):
    """A problem at ``path`` (dotted, relative to the field being checked)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def qualified_name_problem(key: Any) -> str | None:
    if not isinstance(key, str):
        return "must be a string"
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
        return f"{key!r}: the prefix before '/' must be a DNS subdomain (example.com)"
    if not name or len(name) > 63 or not _NAME_PART.match(name):
        return (
            f"{key!r} is not a valid key: up to 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit, with an optional prefix/"
        )
    return None


def label_value_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        return (
            f"{value!r} is not a valid label value: up to 63 letters, digits, '-', '_' or "
            "'.', starting and ending with a letter or digit"
        )
    return None


# --- a small structural checker ----------------------------------------------------------


def _join(path: str, part: str | int) -> str:
    return f"{path}.{part}" if path else str(part)


def _mapping(value: Any, path: str, fields: Mapping[str, Callable[[Any, str], None]]) -> None:
    if not isinstance(value, Mapping):
        raise ShapeError(path, "must be an object")
    for key, item in value.items():
        check = fields.get(key)
        if check is None:
            raise ShapeError(_join(path, str(key)), "unknown field")
        check(item, _join(path, key))


def _list(check: Callable[[Any, str], None], *, min_items: int = 0) -> Callable[[Any, str], None]:
    def run(value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise ShapeError(path, "must be a list")
        if len(value) < min_items:
            raise ShapeError(path, f"needs at least {min_items} item(s)")
        for index, item in enumerate(value):
            check(item, _join(path, index))

    return run


def _string(value: Any, path: str) -> None:
    if not isinstance(value, str):
        raise ShapeError(path, "must be a string")


def _nonempty_string(value: Any, path: str) -> None:
    _string(value, path)
    if not value:
        raise ShapeError(path, "must not be empty")


def _boolean(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        raise ShapeError(path, "must be true or false")


def _int_between(low: int, high: int) -> Callable[[Any, str], None]:
    def run(value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ShapeError(path, f"must be a whole number from {low} to {high}")

    return run


def _qualified_name(value: Any, path: str) -> None:
    problem = qualified_name_problem(value)
    if problem:
        raise ShapeError(path, problem)


def _label_value(value: Any, path: str) -> None:
    problem = label_value_problem(value)
    if problem:
        raise ShapeError(path, problem)


def _labels(value: Any, path: str) -> None:
    if not isinstance(value, Mapping):
        raise ShapeError(path, "must be an object")
    for key, item in value.items():
        _qualified_name(key, _join(path, str(key)))
        _label_value(item, _join(path, str(key)))


def _requirement(*, node: bool, field: bool = False) -> Callable[[Any, str], None]:
    operators = {"In", "NotIn", "Exists", "DoesNotExist"} | ({"Gt", "Lt"} if node else set())
    if field:
        operators = {"In", "NotIn"}

    def run(value: Any, path: str) -> None:
        _mapping(
            value,
            path,
            {
                "key": _string if field else _qualified_name,
                "operator": _string,
                "values": _list(_string),
            },
        )
        if "key" not in value or "operator" not in value:
            raise ShapeError(path, "key and operator are required")
        operator, values = value["operator"], value.get("values") or []
        if operator not in operators:
            raise ShapeError(_join(path, "operator"), f"must be one of {sorted(operators)}")
        if operator in ("In", "NotIn") and not values:
            raise ShapeError(_join(path, "values"), f"operator {operator} needs values")
        if operator in ("Exists", "DoesNotExist") and values:
            raise ShapeError(_join(path, "values"), f"operator {operator} takes no values")
        if operator in ("Gt", "Lt") and (
            len(values) != 1 or not re.fullmatch(r"-?[0-9]+", values[0])
        ):
            raise ShapeError(_join(path, "values"), f"operator {operator} needs one integer")
        if not node:
            for index, item in enumerate(values):
                _label_value(item, _join(_join(path, "values"), index))

    return run


def label_selector(value: Any, path: str) -> None:
    _mapping(
        value,
        path,
        {"matchLabels": _labels, "matchExpressions": _list(_requirement(node=False))},
    )


def _node_selector_term(value: Any, path: str) -> None:
    _mapping(
        value,
        path,
        {
            "matchExpressions": _list(_requirement(node=True)),
            "matchFields": _list(_requirement(node=True, field=True)),
        },
    )


def _pod_affinity_term(value: Any, path: str) -> None:
    _mapping(
        value,
        path,
        {
            "labelSelector": label_selector,
            "namespaceSelector": label_selector,
            "namespaces": _list(_string),
            "topologyKey": _nonempty_string,
            "matchLabelKeys": _list(_string),
            "mismatchLabelKeys": _list(_string),
        },
    )
    if "topologyKey" not in value:
        raise ShapeError(_join(path, "topologyKey"), "is required")


def _weighted(term_field: str, term: Callable[[Any, str], None]) -> Callable[[Any, str], None]:
    def run(value: Any, path: str) -> None:
        _mapping(value, path, {"weight": _int_between(1, 100), term_field: term})
        if "weight" not in value or term_field not in value:
            raise ShapeError(path, f"weight and {term_field} are required")

    return run


def _node_affinity(value: Any, path: str) -> None:
    def required(item: Any, where: str) -> None:
        _mapping(item, where, {"nodeSelectorTerms": _list(_node_selector_term, min_items=1)})
        if "nodeSelectorTerms" not in item:
            raise ShapeError(_join(where, "nodeSelectorTerms"), "is required")

    _mapping(
        value,
        path,
        {
            "requiredDuringSchedulingIgnoredDuringExecution": required,
            "preferredDuringSchedulingIgnoredDuringExecution": _list(
                _weighted("preference", _node_selector_term)
            ),
        },
    )


def _pod_affinity(value: Any, path: str) -> None:
    _mapping(
        value,
        path,
        {
            "requiredDuringSchedulingIgnoredDuringExecution": _list(_pod_affinity_term),
            "preferredDuringSchedulingIgnoredDuringExecution": _list(
                _weighted("podAffinityTerm", _pod_affinity_term)
            ),
        },
    )


def check_affinity(value: Any) -> None:
    """A core/v1 Affinity."""
    _mapping(
        value,
        "",
        {
            "nodeAffinity": _node_affinity,
            "podAffinity": _pod_affinity,
            "podAntiAffinity": _pod_affinity,
        },
    )


def check_env_source(value: Any) -> None:
    """A core/v1 EnvVarSource: exactly one source."""
    key_ref = {"name": _nonempty_string, "key": _nonempty_string, "optional": _boolean}
    _mapping(
        value,
        "",
        {
            "secretKeyRef": lambda v, p: _required(v, p, key_ref, ("name", "key")),
            "configMapKeyRef": lambda v, p: _required(v, p, key_ref, ("name", "key")),
            "fieldRef": lambda v, p: _required(
                v, p, {"fieldPath": _nonempty_string, "apiVersion": _string}, ("fieldPath",)
            ),
            "resourceFieldRef": lambda v, p: _required(
                v,
                p,
                {"resource": _nonempty_string, "containerName": _string, "divisor": _divisor},
                ("resource",),
            ),
        },
    )
    if len(value) != 1:
        raise ShapeError(
            "", "set exactly one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef"
        )


def _divisor(value: Any, path: str) -> None:
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ShapeError(path, "must be a quantity")


def _required(
    value: Any,
    path: str,
    fields: Mapping[str, Callable[[Any, str], None]],
    required: tuple[str, ...],
) -> None:
    _mapping(value, path, fields)
    for name in required:
        if name not in value:
            raise ShapeError(_join(path, name), "is required")


def _cidr(value: Any, path: str) -> None:
    _string(value, path)
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ShapeError(path, f"{value!r} is not a CIDR such as 10.0.0.0/8") from None
    if "/" not in value:
        raise ShapeError(path, f"{value!r} needs a prefix length, such as 10.0.0.0/8")


def check_peer(value: Any) -> None:
    """A networking/v1 NetworkPolicyPeer."""

    def ip_block(item: Any, where: str) -> None:
        _required(item, where, {"cidr": _cidr, "except": _list(_cidr)}, ("cidr",))

    _mapping(
        value,
        "",
        {"podSelector": label_selector, "namespaceSelector": label_selector, "ipBlock": ip_block},
    )
    if not value:
        raise ShapeError("", "set podSelector, namespaceSelector or ipBlock")
    if "ipBlock" in value and len(value) > 1:
        raise ShapeError("ipBlock", "cannot be combined with podSelector or namespaceSelector")
