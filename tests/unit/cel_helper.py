"""Evaluate the generated CRD's rules on a value, the way the API server does, for one path.

    from cel_helper import cel_errors, schema_errors
    cel_errors("spec.gpu", {"migProfile": "1g.10gb", "count": 2})   # -> [message, ...]
    schema_errors("spec.gpu", {"count": 0.5})                       # -> [OpenAPI error, ...]

Paths are dotted property names from the CRD's root (``spec.autoscaling``); ``[]`` steps
into a list's items (``spec.autoscaling.metrics[]``). Like the API server, schema defaults
are filled in before the CEL rules run, and every rule declared at the path is evaluated
with ``self`` bound to the value. ``cel_errors`` covers the rules at that one level;
``all_cel_errors`` walks the value and evaluates nested levels too.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import cache
from typing import Any

import celpy
import jsonschema  # type: ignore[import-untyped]
from crd_validator import as_jsonschema

from kubeserve.crd import crd

_ENV = celpy.Environment()


def root_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def schema_at(path: str) -> dict[str, Any]:
    node = root_schema()
    for part in path.replace("[]", ".[]").split("."):
        if not part:
            continue
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def rules_at(path: str) -> list[tuple[str, str]]:
    """(rule, message) of every x-kubernetes-validations entry declared at ``path``."""
    return [
        (r["rule"], r["message"])
        for r in schema_at(path).get("x-kubernetes-validations", [])
        if not is_transition_rule(r["rule"])
    ]


def is_transition_rule(rule: str) -> bool:
    """A rule on oldSelf: the API server checks it on updates only; these checks model a create."""
    return "oldSelf" in rule


def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """A copy of ``value`` with the schema's defaults filled in (the API server's defaulting)."""
    out = copy.deepcopy(value)

    def fill(node: dict[str, Any], item: Any) -> None:
        if isinstance(item, list) and "items" in node:
            for element in item:
                fill(node["items"], element)
        if not isinstance(item, dict):
            return
        for name, sub in node.get("properties", {}).items():
            if name not in item and "default" in sub:
                item[name] = copy.deepcopy(sub["default"])
            if name in item:
                fill(sub, item[name])

    fill(schema, out)
    return out


def cel_errors(path: str, value: Any) -> list[str]:
    """Messages of the rules at ``path`` that reject ``value``; empty when all pass."""
    schema = schema_at(path)
    return [
        message
        for rule, message in rules_at(path)
        if not _passes(rule, with_defaults(schema, value))
    ]


def all_cel_errors(path: str, value: Any) -> list[str]:
    """Like ``cel_errors``, for the rules at ``path`` and at every level below it."""
    schema = schema_at(path)
    return [
        f"{where}: {message}"
        for where, rule, message, item in _walk(schema, with_defaults(schema, value), path)
        if not _passes(rule, item)
    ]


def schema_errors(path: str, value: Any) -> list[str]:
    """OpenAPI (structural schema) errors for ``value`` at ``path``: types, bounds, patterns."""
    validator = jsonschema.Draft7Validator(as_jsonschema(schema_at(path)))
    return [
        f"{'.'.join(map(str, e.path)) or path}: {e.message}" for e in validator.iter_errors(value)
    ]


def _walk(schema: dict[str, Any], value: Any, path: str) -> Iterator[tuple[str, str, str, Any]]:
    for rule in schema.get("x-kubernetes-validations", []):
        if not is_transition_rule(rule["rule"]):
            yield path, rule["rule"], rule["message"], value
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                yield from _walk(sub, value[name], f"{path}.{name}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from _walk(schema["items"], item, f"{path}[{index}]")


@cache
def _program(rule: str) -> Any:
    return _ENV.program(_ENV.compile(rule))


def _passes(rule: str, value: Any) -> bool:
    try:
        result = _program(rule).evaluate({"self": celpy.json_to_cel(value)})  # type: ignore[attr-defined]
    except celpy.evaluation.CELEvalError:
        # An evaluation error (e.g. a missing field) rejects the object, as in the API server.
        return False
    return isinstance(result, celpy.celtypes.BoolType) and bool(result)
