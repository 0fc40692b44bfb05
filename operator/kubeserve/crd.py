"""The ModelDeployment CRD, generated from the pydantic models in ``api.py``.

pydantic's JSON Schema is close to a structural OpenAPI v3 schema; this module inlines the
``$ref``s, turns ``Optional`` unions into optional properties, drops what Kubernetes
forbids (``additionalProperties: false``, titles) and adds the CEL rules declared on each
model. crds/ holds the output; a test checks it is current.
"""

from __future__ import annotations

from typing import Any

from . import api
from .yamlio import dump

_DROP = {"title", "$defs", "discriminator"}


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
        if isinstance(title, str) and title in rules:
            out["x-kubernetes-validations"] = [
                {"rule": rule, "message": message} for rule, message in rules[title]
            ]
        return out

    return dict(convert(schema))


def _collapse_union(node: dict[str, Any]) -> dict[str, Any]:
    """``X | None`` becomes X; ``str | int`` becomes Kubernetes' int-or-string."""
    members = [member for member in node["anyOf"] if member.get("type") != "null"]
    rest = {key: value for key, value in node.items() if key != "anyOf"}
    if len(members) == 1:
        return {**members[0], **rest}
    if rest.get("x-kubernetes-int-or-string"):
        return rest
    raise ValueError(f"cannot express union in a structural schema: {node}")
