"""Check an HTTPRoute or GRPCRoute against the real Gateway API CRDs, without a cluster.

The CRDs are the unmodified upstream files in ../shared/k8s/crds/ (see its SOURCES.md): their
v1 structural schema (through crd_validator.as_jsonschema), with the schema's defaults filled
in as the API server does, then every x-kubernetes-validations rule evaluated with
cel-python at the level it is declared. A rule cel-python cannot evaluate fails the check
(it is never skipped silently).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema  # type: ignore[import-untyped]
import yaml
from cel_helper import with_defaults
from crd_validator import as_jsonschema

CRDS = Path(__file__).resolve().parents[3] / "shared" / "k8s" / "crds"
FILES = {
    "HTTPRoute": "gateway.networking.k8s.io_httproutes.yaml",
    "GRPCRoute": "gateway.networking.k8s.io_grpcroutes.yaml",
}
_ENV = celpy.Environment()


def crds_dir() -> Path:
    # The worktree may sit beside shared/ or one level deeper; /work/shared is the fallback.
    for candidate in (CRDS, Path("/work/shared/k8s/crds")):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("shared/k8s/crds not found")


@cache
def version_schema(kind: str, version: str = "v1") -> dict[str, Any]:
    crd = yaml.safe_load((crds_dir() / FILES[kind]).read_text())
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(f"{kind} has no version {version}")


def _rules(schema: dict[str, Any], value: Any, path: str) -> Iterator[tuple[str, str, str, Any]]:
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" not in rule["rule"]:
            yield path, rule["rule"], rule.get("message", rule["rule"]), value
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                yield from _rules(sub, value[name], f"{path}.{name}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from _rules(schema["items"], item, f"{path}[{index}]")


@cache
def _program(rule: str) -> Any:
    return _ENV.program(_ENV.compile(rule))


def route_errors(obj: dict[str, Any]) -> list[str]:
    """What the API server would answer when `obj` (an HTTPRoute or GRPCRoute) is applied."""
    if obj.get("apiVersion") != "gateway.networking.k8s.io/v1":
        return [f"apiVersion {obj.get('apiVersion')!r}: expected gateway.networking.k8s.io/v1"]
    schema = version_schema(obj["kind"])
    # Closed objects: a misspelt field fails here instead of being pruned by the server.
    validator = jsonschema.Draft7Validator(_closed(as_jsonschema(schema)))
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)
    ]
    if errors:
        return errors
    for path, rule, message, value in _rules(schema, with_defaults(schema, obj), ""):
        try:
            result = _program(rule).evaluate({"self": celpy.json_to_cel(value)})
        except celpy.CELEvalError as exc:  # type: ignore[attr-defined]
            errors.append(f"{path.lstrip('.')}: {message} (evaluation failed: {exc})")
            continue
        if not bool(result):
            errors.append(f"{path.lstrip('.')}: {message}")
    return errors


def _closed(node: Any) -> Any:
    """additionalProperties: false on every object schema that lists its properties (but not
    metadata, whose fields the CRD leaves to the API server)."""
    if isinstance(node, list):
        return [_closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _closed(value) for key, value in node.items()}
    props = out.get("properties")
    if isinstance(props, dict) and "additionalProperties" not in out and "metadata" not in props:
        out["additionalProperties"] = False
    if isinstance(props, dict) and "metadata" in props:
        props["metadata"] = {"type": "object"}
    return out
