"""Open Inference Protocol v2 over HTTP/JSON: request bodies -> numpy, numpy -> response bodies.

Also the binary tensor data extension (the one Triton's and KServe's HTTP clients use for large
tensors): when the request carries the header `Inference-Header-Content-Length: N`, the first N
bytes of the body are the JSON header and the rest is the raw little-endian data of every input
whose `parameters.binary_data_size` is set, in the order those inputs appear. Outputs are sent the
same way when the request asks for it (`outputs[i].parameters.binary_data: true`, or
`parameters.binary_data_output: true` for all of them).

Every check against the model's signature happens here, before a request reaches the batcher, so
one bad request can never fail a batch it would have been merged into.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import jsoncodec
from .datatypes import V2_TO_NUMPY, numpy_to_v2
from .errors import BadRequest

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"

# A v2 BYTES element in binary form: a 4-byte little-endian length, then the bytes.
_LENGTH_PREFIX = struct.Struct("<I")


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the graph declares it; -1 marks a dynamic dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def accepts_shape(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.shape) and all(
            want == -1 or want == got for want, got in zip(self.shape, shape, strict=True)
        )


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    """A decoded request whose inputs already match the model's signature."""

    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: tuple[RequestedOutput, ...]


def model_metadata(
    name: str, version: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> dict[str, Any]:
    return {
        "name": name,
        "versions": [version],
        "platform": "onnxruntime_onnx",
        "inputs": [spec.metadata() for spec in inputs],
        "outputs": [spec.metadata() for spec in outputs],
    }


def parse_header_length(value: str | None, body_length: int) -> int | None:
    """The value of `Inference-Header-Content-Length`, checked against the body's length."""
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise BadRequest(f"{HEADER_LENGTH} must be an integer, got {value!r}") from None
    if not 0 <= length <= body_length:
        raise BadRequest(f"{HEADER_LENGTH} is {length} but the body has only {body_length} bytes")
    return length


def decode_request(
    body: bytes,
    header_length: int | None,
    inputs: Mapping[str, TensorSpec],
    outputs: Mapping[str, TensorSpec],
) -> InferRequest:
    """Decode and validate a v2 infer request body against the model's inputs and outputs."""
    view = memoryview(body)
    json_part = view if header_length is None else view[:header_length]
    binary = view[len(json_part) :]
    try:
        doc = jsoncodec.loads(bytes(json_part))
    except ValueError as exc:  # includes UnicodeDecodeError
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadRequest("request body must be a JSON object with an 'inputs' list")

    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")

    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("'inputs' must be a non-empty list of tensors")

    decoded: dict[str, np.ndarray] = {}
    offset = 0
    for position, raw in enumerate(raw_inputs):
        name, datatype, shape, size = _input_header(raw, position, inputs)
        if name in decoded:
            raise BadRequest(f"input '{name}' is given more than once")
        if size is None:
            if "data" not in raw:
                raise BadRequest(
                    f"input '{name}' has neither 'data' nor parameters.binary_data_size"
                )
            decoded[name] = _decode_json_data(name, datatype, shape, raw["data"])
        else:
            if offset + size > len(binary):
                raise BadRequest(
                    f"input '{name}' declares binary_data_size {size} but only "
                    f"{len(binary) - offset} bytes of binary data are left in the body"
                )
            chunk = binary[offset : offset + size]
            offset += size
            decoded[name] = decode_binary_data(name, datatype, shape, chunk)
    if offset != len(binary):
        raise BadRequest(
            f"the body has {len(binary)} bytes after the JSON header but the inputs' "
            f"binary_data_size add up to {offset}"
        )
    check_all_given(decoded, inputs)

    return InferRequest(request_id, decoded, _requested_outputs(doc, outputs))


def _input_header(
    raw: object, position: int, inputs: Mapping[str, TensorSpec]
) -> tuple[str, str, tuple[int, ...], int | None]:
    """Name, datatype, shape and binary size of one request input, checked against the model."""
    if not isinstance(raw, dict):
        raise BadRequest(f"inputs[{position}] must be an object")
    name = raw.get("name")
    if not isinstance(name, str):
        raise BadRequest(f"inputs[{position}] has no string 'name'")
    spec = input_spec(name, inputs)

    datatype = raw.get("datatype")
    if not isinstance(datatype, str):
        raise BadRequest(f"input '{name}' has no string 'datatype'")
    check_datatype(spec, datatype)

    shape = raw.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(dim, int) and not isinstance(dim, bool) for dim in shape
    ):
        raise BadRequest(f"input '{name}' needs 'shape', a list of non-negative integers")
    check_shape(spec, shape)

    size: int | None = None
    parameters = raw.get("parameters")
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise BadRequest(f"input '{name}': 'parameters' must be an object")
        if "binary_data_size" in parameters:
            size = parameters["binary_data_size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadRequest(f"input '{name}': binary_data_size must be a non-negative integer")
    return name, datatype, tuple(shape), size


# The checks below are shared by both protocols (HTTP here, gRPC in grpc_codec.py), so a bad
# request gets the same message whichever way it came.


def input_spec(name: str, inputs: Mapping[str, TensorSpec]) -> TensorSpec:
    spec = inputs.get(name)
    if spec is None:
        raise BadRequest(f"unknown input '{name}'; the model's inputs are: {', '.join(inputs)}")
    return spec


def check_datatype(spec: TensorSpec, datatype: str) -> None:
    if datatype != spec.datatype:
        raise BadRequest(
            f"input '{spec.name}' has datatype {datatype} but the model expects {spec.datatype}"
        )
    if datatype not in V2_TO_NUMPY:
        raise BadRequest(
            f"input '{spec.name}': datatype {datatype} is not supported by this server"
        )


def check_shape(spec: TensorSpec, shape: Sequence[int]) -> None:
    if any(dim < 0 for dim in shape):
        raise BadRequest(f"input '{spec.name}' needs 'shape', a list of non-negative integers")
    if not spec.accepts_shape(shape):
        raise BadRequest(
            f"input '{spec.name}' has shape {list(shape)} but the model expects "
            f"{list(spec.shape)} (-1 is any size)"
        )


def check_all_given(decoded: Mapping[str, np.ndarray], inputs: Mapping[str, TensorSpec]) -> None:
    missing = [name for name in inputs if name not in decoded]
    if missing:
        raise BadRequest(f"missing input(s): {', '.join(missing)}")


def output_spec(name: str, outputs: Mapping[str, TensorSpec]) -> TensorSpec:
    spec = outputs.get(name)
    if spec is None:
        raise BadRequest(f"unknown output '{name}'; the model's outputs are: {', '.join(outputs)}")
    return spec


def _decode_json_data(name: str, datatype: str, shape: tuple[int, ...], data: object) -> np.ndarray:
    if not isinstance(data, list):
        raise BadRequest(f"input '{name}': 'data' must be a list")
    expected = math.prod(shape)
    try:
        array = np.asarray(data)
    except (ValueError, TypeError):
        raise BadRequest(
            f"input '{name}': 'data' is not a flat or rectangular nested list"
        ) from None
    if array.size != expected:
        raise BadRequest(
            f"input '{name}' has {array.size} elements in 'data' but shape {list(shape)} "
            f"needs {expected}"
        )
    if expected == 0:  # `[]` parses as float64: nothing to check, just give it the right type
        return np.zeros(shape, dtype=V2_TO_NUMPY[datatype])
    dtype = V2_TO_NUMPY[datatype]
    kind = array.dtype.kind
    # np.asarray(..., dtype) would silently turn 1.5 into 1, true into 1.0 and null into NaN:
    # infer first, then refuse values that do not belong to the declared datatype.
    if datatype == "BYTES":
        if kind != "U":
            raise BadRequest(f"input '{name}': BYTES data must be strings")
        return array.astype(object).reshape(shape)
    if datatype == "BOOL":
        if kind != "b":
            raise BadRequest(f"input '{name}': BOOL data must be true/false")
    elif dtype.kind in "iu":
        if kind not in "iu":
            raise BadRequest(f"input '{name}': {datatype} data must be integers")
        info = np.iinfo(dtype.str)
        if array.min() < info.min or array.max() > info.max:
            raise BadRequest(f"input '{name}': a value is out of range for {datatype}")
    elif kind not in "iuf":
        raise BadRequest(f"input '{name}': {datatype} data must be numbers")
    return array.astype(dtype, copy=False).reshape(shape)


def decode_binary_data(
    name: str, datatype: str, shape: tuple[int, ...], chunk: memoryview
) -> np.ndarray:
    expected = math.prod(shape)
    if datatype == "BYTES":
        return _decode_binary_strings(name, shape, expected, chunk)
    dtype = V2_TO_NUMPY[datatype]
    if len(chunk) != expected * dtype.itemsize:
        raise BadRequest(
            f"input '{name}' has {len(chunk)} bytes of binary data but shape {list(shape)} "
            f"of {datatype} needs {expected * dtype.itemsize}"
        )
    # No copy: the array is a read-only view of the request body, which ORT accepts as is.
    return np.frombuffer(chunk, dtype=dtype).reshape(shape)


def _decode_binary_strings(
    name: str, shape: tuple[int, ...], expected: int, chunk: memoryview
) -> np.ndarray:
    items: list[str] = []
    offset = 0
    while offset < len(chunk):
        if offset + _LENGTH_PREFIX.size > len(chunk):
            raise BadRequest(f"input '{name}': truncated BYTES element length")
        (length,) = _LENGTH_PREFIX.unpack_from(chunk, offset)
        offset += _LENGTH_PREFIX.size
        if offset + length > len(chunk):
            raise BadRequest(f"input '{name}': a BYTES element runs past the binary data")
        try:
            items.append(bytes(chunk[offset : offset + length]).decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest(
                f"input '{name}': BYTES elements must be UTF-8 (ONNX strings are text)"
            ) from None
        offset += length
    if len(items) != expected:
        raise BadRequest(
            f"input '{name}' has {len(items)} BYTES elements but shape {list(shape)} "
            f"needs {expected}"
        )
    array = np.empty(expected, dtype=object)
    array[:] = items
    return array.reshape(shape)


def _requested_outputs(
    doc: dict[str, Any], outputs: Mapping[str, TensorSpec]
) -> tuple[RequestedOutput, ...]:
    parameters = doc.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise BadRequest("'parameters' must be an object")
    binary_default = bool((parameters or {}).get("binary_data_output", False))

    raw_outputs = doc.get("outputs")
    if raw_outputs is None:
        return tuple(RequestedOutput(name, binary_default) for name in outputs)
    if not isinstance(raw_outputs, list):
        raise BadRequest("'outputs' must be a list")
    requested: list[RequestedOutput] = []
    for position, raw in enumerate(raw_outputs):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise BadRequest(f"outputs[{position}] must be an object with a string 'name'")
        name = raw["name"]
        output_spec(name, outputs)
        out_parameters = raw.get("parameters") or {}
        if not isinstance(out_parameters, dict):
            raise BadRequest(f"output '{name}': 'parameters' must be an object")
        requested.append(
            RequestedOutput(name, bool(out_parameters.get("binary_data", binary_default)))
        )
    return tuple(requested)


def encode_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: Sequence[tuple[RequestedOutput, np.ndarray]],
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when some output travels as binary."""
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for requested, array in outputs:
        tensor: dict[str, Any] = {
            "name": requested.name,
            "datatype": numpy_to_v2(array.dtype),
            "shape": list(array.shape),
        }
        if requested.binary:
            blob = binary_bytes(array)
            blobs.append(blob)
            tensor["parameters"] = {"binary_data_size": len(blob)}
        else:
            tensor["data"] = _json_data(array)
        tensors.append(tensor)
    doc["outputs"] = tensors
    header = jsoncodec.dumps(doc)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def _json_data(array: np.ndarray) -> list[Any] | np.ndarray:
    """The flat, row-major `data` of an output: strings as a list, numbers as an array that
    jsoncodec writes without converting each element to a Python object."""
    if array.dtype.kind in "OUS":
        return [_text(item) for item in array.ravel()]
    return np.ascontiguousarray(array).ravel()


def binary_bytes(array: np.ndarray) -> bytes:
    if array.dtype.kind in "OUS":
        parts: list[bytes] = []
        for item in array.ravel():
            encoded = item if isinstance(item, bytes) else _text(item).encode("utf-8")
            parts.append(_LENGTH_PREFIX.pack(len(encoded)))
            parts.append(encoded)
        return b"".join(parts)
    little = array.dtype.newbyteorder("<")
    return np.ascontiguousarray(array, dtype=little).tobytes()


def _text(item: object) -> str:
    return item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
