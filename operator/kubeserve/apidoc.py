"""The field reference in docs/api.md, generated from the CRD so the two cannot drift."""

from __future__ import annotations

from typing import Any

from .crd import crd

BEGIN = "<!-- BEGIN GENERATED FIELDS (make docs) -->"
END = "<!-- END GENERATED FIELDS -->"


def field_table() -> str:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    rows = ["| field | type | default | validation | description |", "|---|---|---|---|---|"]
    for top in ("spec", "status"):
        rows += [_row(path, node, required) for path, node, required in _walk(schema[top], top)]
    rules = [
        "",
        "Cross-field rules (CEL, enforced by the API server and again by the operator):",
        "",
    ]
    for path, node, _required in _walk(schema["spec"], "spec"):
        rules += [f"- `{path}`: {r['message']}" for r in node.get("x-kubernetes-validations", [])]
    return "\n".join([BEGIN, *rows, *rules, END])


def _walk(
    node: dict[str, Any], path: str, required: bool = False
) -> list[tuple[str, dict[str, Any], bool]]:
    found = [(path, node, required)]
    needed = set(node.get("required", []))
    for name, sub in node.get("properties", {}).items():
        found += _walk(sub, f"{path}.{name}", name in needed)
    items = node.get("items")
    if isinstance(items, dict) and items.get("properties"):
        for name, sub in items["properties"].items():
            found += _walk(sub, f"{path}[].{name}", name in set(items.get("required", [])))
    return found


def _row(path: str, node: dict[str, Any], required: bool) -> str:
    kind = "int or string" if node.get("x-kubernetes-int-or-string") else node.get("type", "")
    if kind == "array" and isinstance(node.get("items"), dict):
        kind = f"array of {node['items'].get('type', 'object')}"
    checks = []
    if required:
        checks.append("required")
    if "enum" in node:
        checks.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    for key, label in (("minimum", ">="), ("maximum", "<="), ("exclusiveMinimum", ">")):
        if key in node:
            checks.append(f"{label} {node[key]}")
    for key, label in (
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("maxItems", "max items"),
        ("minItems", "min items"),
    ):
        if key in node:
            checks.append(f"{label} {node[key]}")
    if "pattern" in node:
        checks.append(f"pattern `{node['pattern']}`")
    default = f"`{node['default']}`" if "default" in node else ""
    description = " ".join(str(node.get("description", "")).split()).replace("|", "\\|")
    validation = "; ".join(checks).replace("|", "\\|")
    return f"| `{path}` | {kind} | {default} | {validation} | {description} |"


def update(path: str) -> None:
    """Replace the generated part of ``path`` (docs/api.md) with the current table."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    text = text[: text.index(BEGIN)] + field_table() + text[text.index(END) + len(END) :]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


if __name__ == "__main__":
    import sys

    update(sys.argv[1])
