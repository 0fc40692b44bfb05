"""Validate an object the way the API server would against our CRD: schema, then CEL.

The OpenAPI part uses jsonschema (Kubernetes' int-or-string and preserve-unknown-fields
translated); the x-kubernetes-validations rules are evaluated with cel-python at the level
of the schema where they are declared, with ``self`` bound to that value.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import celpy
import jsonschema

from kubeserve.crd import crd

_SCHEMA = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def as_jsonschema(node: Any) -> Any:
    """Kubernetes' structural-schema extensions in plain JSON Schema (Draft 7) terms."""
    if isinstance(node, list):
        return [as_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: as_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if node.get("x-kubernetes-int-or-string"):
        pattern = out.pop("pattern", None)
        out["anyOf"] = [
            {"type": "integer"},
            {"type": "string", **({"pattern": pattern} if pattern else {})},
        ]
    # OpenAPI v3.0's boolean flag on a bound is Draft 7's numeric exclusive bound.
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(exclusive) is True:
            out[exclusive] = out.pop(bound)
        elif out.get(exclusive) is False:
            del out[exclusive]
    return out


_VALIDATOR = jsonschema.Draft7Validator(as_jsonschema(_SCHEMA))
_ENV = celpy.Environment()


def _rules(schema: dict[str, Any], value: Any, path: str) -> Iterator[tuple[str, str, str, Any]]:
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" not in rule["rule"]:  # checked on updates only; this models a create
            yield path, rule["rule"], rule["message"], value
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                yield from _rules(sub, value[name], f"{path}.{name}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from _rules(schema["items"], item, f"{path}[{index}]")


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Messages the API server would answer `kubectl apply` with; empty when accepted."""
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in _VALIDATOR.iter_errors(obj)]
    if errors:
        return errors
    for path, rule, message, value in _rules(_SCHEMA, _with_defaults(obj), ""):
        program = _ENV.program(_ENV.compile(rule))
        if not program.evaluate({"self": celpy.json_to_cel(value)}):
            errors.append(f"{path.lstrip('.')}: {message}")
    return errors


def _with_defaults(obj: dict[str, Any]) -> dict[str, Any]:
    """The API server applies schema defaults before CEL runs; so do we."""
    out = copy.deepcopy(obj)

    def fill(schema: dict[str, Any], value: Any) -> None:
        if not isinstance(value, dict):
            if isinstance(value, list) and "items" in schema:
                for item in value:
                    fill(schema["items"], item)
            return
        for name, sub in schema.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                fill(sub, value[name])

    fill(_SCHEMA, out)
    return out
