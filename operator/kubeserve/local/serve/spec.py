"""Read the ModelDeployment YAML `kubeserve serve` was given, validated like the operator does."""

from __future__ import annotations

from pathlib import Path

import yaml

from ...api import InvalidSpec, ModelDeployment
from ..errors import LocalError


def load(filename: str) -> ModelDeployment:
    """The one ModelDeployment in `filename`, parsed with local model URIs admitted."""
    try:
        text = Path(filename).read_text()
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except OSError as exc:
        raise LocalError(f"cannot read {filename}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise LocalError(f"{filename} is not valid YAML: {exc}".replace("\n", " ")) from exc
    deployments = [
        doc
        for doc in documents
        if isinstance(doc, dict) and doc.get("kind", "ModelDeployment") == "ModelDeployment"
    ]
    if len(deployments) != 1:
        raise LocalError(f"{filename}: expected one ModelDeployment, found {len(deployments)}")
    try:
        return ModelDeployment.parse(deployments[0], local=True)
    except InvalidSpec as exc:
        raise LocalError(f"invalid ModelDeployment in {filename}: {exc}") from exc
