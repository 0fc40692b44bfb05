"""kubeserve's generic tensor handler for TorchServe, archived into .mar files by
`kubeserve package --format mar`. It runs inside TorchServe's Python worker, so it imports only
the standard library and torch (never kubeserve).

Request body (JSON, one request): ``{"data": <nested list>}`` or a bare nested list, with a
leading batch dimension, e.g. ``{"data": [[0.1, 0.2, 0.3, 0.4]]}`` for a model of shape (N, 4).
Response: ``{"data": <nested list>}``, the model's (first) output for that request's rows.
TorchServe's batching merges concurrent requests; each gets back exactly its own rows. A bad
request gets HTTP 400 with ``{"error": ...}`` and does not fail the others in its batch.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

# Written next to the TorchScript file by `kubeserve package`: input dtype and per-row shape.
CONFIG_FILE = "kubeserve_handler.json"


class BadRequest(ValueError):
    pass


class TensorHandler:
    def __init__(self) -> None:
        self.initialized = False
        self.model: Any = None
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.row_shape: tuple[int, ...] | None = None

    def initialize(self, context: Any) -> None:
        properties = context.system_properties
        model_dir = properties["model_dir"]
        gpu_id = properties.get("gpu_id")
        if gpu_id is not None and torch.cuda.is_available():
            self.device = torch.device(f"cuda:{gpu_id}")
        serialized = context.manifest["model"]["serializedFile"]
        path = os.path.join(model_dir, serialized)
        self.model = torch.jit.load(path, map_location=self.device)  # type: ignore[no-untyped-call]
        self.model.eval()
        config_path = os.path.join(model_dir, CONFIG_FILE)
        if os.path.isfile(config_path):
            with open(config_path) as handle:
                config = json.load(handle)
            self.dtype = getattr(torch, config.get("input_dtype", "float32"))
            shape = config.get("row_shape")
            self.row_shape = tuple(shape) if shape is not None else None
        self.initialized = True

    def handle(self, data: list[Any], context: Any) -> list[Any]:
        responses: list[Any] = [None] * len(data)
        tensors: list[tuple[int, torch.Tensor]] = []
        for index, request in enumerate(data):
            try:
                tensors.append((index, self._tensor(request)))
            except BadRequest as exc:
                context.set_response_status(400, "Bad Request", idx=index)
                responses[index] = {"error": str(exc)}
        if tensors:
            batch = torch.cat([tensor for _, tensor in tensors]).to(self.device)
            with torch.inference_mode():
                output = self.model(batch)
            if isinstance(output, (tuple, list)):
                output = output[0]
            parts = torch.split(output.cpu(), [tensor.shape[0] for _, tensor in tensors])
            for (index, _), part in zip(tensors, parts, strict=True):
                responses[index] = {"data": part.tolist()}
        return responses

    def _tensor(self, request: Any) -> torch.Tensor:
        payload = request.get("body", request.get("data")) if isinstance(request, dict) else request
        if isinstance(payload, (bytes, bytearray)):
            try:
                payload = json.loads(payload)
            except ValueError as exc:
                raise BadRequest(f"the body is not JSON: {exc}") from None
        if isinstance(payload, dict):
            if "data" not in payload:
                raise BadRequest('expected {"data": [[...]]}')
            payload = payload["data"]
        try:
            tensor = torch.tensor(payload, dtype=self.dtype)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise BadRequest(f"data is not a rectangular array of numbers: {exc}") from None
        if self.row_shape is not None and tuple(tensor.shape[1:]) != self.row_shape:
            want = ", ".join(["N", *map(str, self.row_shape)])
            raise BadRequest(f"data has shape {list(tensor.shape)}; expected [{want}]")
        if tensor.dim() == 0 or tensor.shape[0] == 0:
            raise BadRequest("data needs a leading batch dimension with at least one row")
        return tensor


_service = TensorHandler()


def handle(data: list[Any] | None, context: Any) -> list[Any] | None:
    """TorchServe's entry point for a module handler."""
    if not _service.initialized:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
