"""The ModelDeployment CRD, generated from the pydantic models in ``api.py``.

pydantic writes JSON Schema 2020-12; a CRD takes OpenAPI v3.0's structural subset of it.
This module inlines the ``$ref``s, turns ``Optional`` unions into optional properties,
drops what Kubernetes forbids (``additionalProperties: false``, titles), translates the
numeric ``exclusiveMinimum``/``exclusiveMaximum`` of 2020-12 into OpenAPI v3.0's boolean
form, and refuses any other keyword a CRD schema does not have: an API server would reject
the whole CRD at install time. Then it adds the CEL rules declared on each model. crds/ holds
the output; a test checks it is current.
"""

from __future__ import annotations

from typing import Any

from . import api
from .yamlio import dump

_DROP = {"title", "$defs", "discriminator"}

# The keywords of apiextensions.k8s.io/v1 JSONSchemaProps that a structural schema may use
# (OpenAPI v3.0 plus Kubernetes' extensions). Anything else fails the CRD's installation.
OPENAPI_V3_KEYWORDS = frozenset(
    {
        "type", "format", "description", "default", "example", "nullable", "enum",
        "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum", "multipleOf",
        "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems",
        "maxProperties", "minProperties", "required", "items", "properties",
        "additionalProperties", "allOf", "oneOf", "anyOf", "not",
        "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource",
        "x-kubernetes-int-or-string", "x-kubernetes-list-map-keys", "x-kubernetes-list-type",
        "x-kubernetes-map-type", "x-kubernetes-validations",
    }
)  # fmt: skip


def crd() -> dict[str, Any]:
    spec_schema = _structural(api.ModelDeploymentSpec.model_json_schema(by_alias=True))
    spec_schema["description"] = "What to serve, on which hardware, and how to scale it."
    status_schema = _structural(api.ModelDeploymentStatus.model_json_schema(by_alias=True))
    status_schema["description"] = "What the operator observed; written by the operator only."
    status_schema["properties"]["conditions"].update(
        {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
    )
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "kubeserve"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.KIND.lower(),
                "shortNames": ["md"],
                "categories": ["kubeserve", "all"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A model served by TF Serving, TorchServe or "
                            "ONNX Runtime, with GPU node selection and autoscaling.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {
                                    "type": "string",
                                    "description": "APIVersion of this object.",
                                },
                                "kind": {"type": "string", "description": "Kind of this object."},
                                # The API server checks a custom resource's name only
                                # as a URL path segment; the operator needs a DNS
                                # subdomain (its children are named after it). A CRD
                                # may constrain metadata.name, and nothing else there.
                                "metadata": {
                                    "type": "object",
                                    "properties": {
                                        "name": {
                                            "type": "string",
                                            "maxLength": 253,
                                            "pattern": api.DNS_SUBDOMAIN_PATTERN,
                                        }
                                    },
                                },
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated from operator/kubeserve/api.py by `kubeserve crd`. Do not edit.\n"
    return header + dump(crd())


def _printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Runtime", "type": "string", "jsonPath": ".spec.runtime"},
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas"},
        {"name": "URL", "type": "string", "jsonPath": ".status.url"},
        {
            "name": "Canary",
            "type": "integer",
            "description": "The canary's share of the requests in effect, in %.",
            "jsonPath": ".status.canary.trafficPercent",
        },
        {
            "name": "Cold-Start",
            "type": "number",
            "priority": 1,
            "description": "Seconds the latest model-server pod took from created to Ready.",
            "jsonPath": ".status.lastColdStart.totalSeconds",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def _cel_rules_by_title() -> dict[str, tuple[tuple[str, str], ...]]:
    return {model.__name__: model.cel_rules for model in api.SCHEMA_MODELS if model.cel_rules}


def _structural(schema: dict[str, Any]) -> dict[str, Any]:
    definitions = schema.get("$defs", {})
    rules = _cel_rules_by_title()

    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            merged = {**definitions[name], **{k: v for k, v in node.items() if k != "$ref"}}
            return convert(merged)
        if "anyOf" in node:
            return convert(_collapse_union(node))
        title = node.get("title")
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROP or (key == "additionalProperties" and isinstance(value, bool)):
                continue
            if key == "default" and value is None:
                continue
            out[key] = convert(value)
        if out.get("type") == "object" and "properties" in out:
            out["required"] = [
                name for name in out.get("required", []) if name in out["properties"]
            ] or None
            if out["required"] is None:
                del out["required"]
        if "enum" in out:
            out.setdefault("type", "string")
        _to_openapi_v3_bounds(out)
        if isinstance(title, str) and title in rules:
            out["x-kubernetes-validations"] = [
                {"rule": rule, "message": message} for rule, message in rules[title]
            ]
        return out

    result = dict(convert(schema))
    _refuse_unknown_keywords(result, "")
    return result


def _to_openapi_v3_bounds(node: dict[str, Any]) -> None:
    """2020-12's ``exclusiveMinimum: 0`` is OpenAPI v3.0's ``minimum: 0`` with a flag."""
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = node.get(exclusive)
        if isinstance(value, bool) or value is None:
            continue
        if bound in node:
            raise ValueError(f"both {bound} and a numeric {exclusive}: keep one bound")
        node[bound], node[exclusive] = value, True


def _refuse_unknown_keywords(node: Any, path: str) -> None:
    """Fail at generation, not at ``kubectl apply -f crds/``, on what a CRD cannot hold."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            _refuse_unknown_keywords(item, f"{path}[{index}]")
        return
    if not isinstance(node, dict):
        return
    unknown = sorted(set(node) - OPENAPI_V3_KEYWORDS)
    if unknown:
        raise ValueError(
            f"{path or '<root>'}: {', '.join(unknown)} is not OpenAPI v3.0 (a CRD schema "
            "cannot hold it); express it with the keywords a CRD takes, or a CEL rule"
        )
    for key in ("properties",):
        for name, sub in (node.get(key) or {}).items():
            _refuse_unknown_keywords(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            _refuse_unknown_keywords(node[key], f"{path}.{key}")
    for key in ("allOf", "oneOf", "anyOf"):
        if key in node:
            _refuse_unknown_keywords(node[key], f"{path}.{key}")


def _collapse_union(node: dict[str, Any]) -> dict[str, Any]:
    """``X | None`` becomes X; ``str | int`` becomes Kubernetes' int-or-string."""
    members = [member for member in node["anyOf"] if member.get("type") != "null"]
    rest = {key: value for key, value in node.items() if key != "anyOf"}
    if len(members) == 1:
        return {**members[0], **rest}
    if rest.get("x-kubernetes-int-or-string"):
        return rest
    raise ValueError(f"cannot express union in a structural schema: {node}")
