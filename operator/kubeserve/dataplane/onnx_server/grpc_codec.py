"""Open Inference Protocol v2 over gRPC: ModelInferRequest -> numpy, numpy -> ModelInferResponse.

The gRPC twin of protocol.py, and it reuses protocol.py's checks (input_spec, check_datatype,
check_shape, check_all_given, output_spec, decode_binary_data), so a request that is bad over
HTTP is bad over gRPC with the same message.

Tensor data comes either typed, in each input's `contents` (the field of its datatype family:
fp32_contents for FP32, int_contents for INT8/16/32, ...), or raw, in `raw_input_contents[i]`
for `inputs[i]`: little-endian bytes, BYTES elements as a 4-byte length then the bytes (the
same layout as HTTP's binary tensor data extension, decoded by the same function). The standard
says raw contents, when used, cover every input, and an input never has both.

Outputs come back raw (`raw_output_contents`) when the request sent raw inputs, or asked for
binary outputs (the `binary_data` output parameter or the `binary_data_output` request parameter,
as KServe's client does), or when an output has no typed field (FP16); otherwise typed. Triton's
client reads raw outputs, and it always sends raw inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .datatypes import V2_TO_NUMPY, numpy_to_v2
from .errors import BadRequest
from .oip import inference_pb2 as pb
from .protocol import (
    InferRequest,
    RequestedOutput,
    TensorSpec,
    binary_bytes,
    check_all_given,
    check_datatype,
    check_shape,
    decode_binary_data,
    input_spec,
    output_spec,
)

# The InferTensorContents field of each datatype. FP16 and BF16 have none: raw only.
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
# Datatypes narrower than their contents field: the values need a range check.
_NARROW = {"INT8", "INT16", "UINT8", "UINT16"}


def decode_request(
    request: pb.ModelInferRequest,
    inputs: Mapping[str, TensorSpec],
    outputs: Mapping[str, TensorSpec],
) -> InferRequest:
    """Decode and validate a ModelInferRequest against the model's inputs and outputs."""
    if not request.inputs:
        raise BadRequest("'inputs' must be a non-empty list of tensors")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(
            f"raw_input_contents has {len(raw)} entries but the request has "
            f"{len(request.inputs)} inputs; when used, it needs one per input"
        )
    decoded: dict[str, np.ndarray] = {}
    for position, tensor in enumerate(request.inputs):
        name = tensor.name
        spec = input_spec(name, inputs)
        if name in decoded:
            raise BadRequest(f"input '{name}' is given more than once")
        check_datatype(spec, tensor.datatype)
        shape = tuple(tensor.shape)
        check_shape(spec, shape)
        typed = tensor.contents.ListFields()
        if raw:
            if typed:
                raise BadRequest(
                    f"input '{name}' has typed contents but the request uses "
                    "raw_input_contents; use one or the other for all inputs"
                )
            decoded[name] = decode_binary_data(
                name, tensor.datatype, shape, memoryview(raw[position])
            )
        else:
            decoded[name] = _decode_typed(name, tensor.datatype, shape, typed)
    check_all_given(decoded, inputs)
    return InferRequest(request.id or None, decoded, _requested_outputs(request, outputs))


def _decode_typed(
    name: str, datatype: str, shape: tuple[int, ...], typed: Sequence[tuple[Any, Any]]
) -> np.ndarray:
    expected = math.prod(shape)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise BadRequest(
            f"input '{name}': {datatype} has no typed contents field; send it in raw_input_contents"
        )
    values: Sequence[Any] = ()
    for descriptor, value in typed:
        if descriptor.name != field:
            raise BadRequest(
                f"input '{name}' is {datatype}, whose data goes in contents.{field}, "
                f"but contents.{descriptor.name} is set"
            )
        values = value
    if len(values) != expected:
        if not values and not typed and expected:
            raise BadRequest(f"input '{name}' has neither contents nor raw_input_contents")
        raise BadRequest(
            f"input '{name}' has {len(values)} elements in contents.{field} but shape "
            f"{list(shape)} needs {expected}"
        )
    if datatype == "BYTES":
        array = np.empty(expected, dtype=object)
        try:
            array[:] = [bytes(item).decode("utf-8") for item in values]
        except UnicodeDecodeError:
            raise BadRequest(
                f"input '{name}': BYTES elements must be UTF-8 (ONNX strings are text)"
            ) from None
        return array.reshape(shape)
    dtype = V2_TO_NUMPY[datatype]
    if datatype in _NARROW and expected:
        wide = np.asarray(values, dtype=np.int64)
        info = np.iinfo(dtype.str)
        if wide.min() < info.min or wide.max() > info.max:
            raise BadRequest(f"input '{name}': a value is out of range for {datatype}")
        return wide.astype(dtype).reshape(shape)
    return np.asarray(values, dtype=dtype).reshape(shape)


def _binary_parameter(parameters: Mapping[str, pb.InferParameter], key: str) -> bool:
    parameter = parameters.get(key)
    return (
        parameter is not None
        and parameter.WhichOneof("parameter_choice") == "bool_param"
        and (parameter.bool_param)
    )


def _requested_outputs(
    request: pb.ModelInferRequest, outputs: Mapping[str, TensorSpec]
) -> tuple[RequestedOutput, ...]:
    # RequestedOutput.binary means "this output travels raw" here.
    binary = bool(request.raw_input_contents) or _binary_parameter(
        request.parameters, "binary_data_output"
    )
    if not request.outputs:
        return tuple(RequestedOutput(name, binary) for name in outputs)
    requested = []
    for wanted in request.outputs:
        output_spec(wanted.name, outputs)
        requested.append(
            RequestedOutput(
                wanted.name, binary or _binary_parameter(wanted.parameters, "binary_data")
            )
        )
    return tuple(requested)


def encode_response(
    model_name: str,
    model_version: str,
    request: InferRequest,
    outputs: Mapping[str, np.ndarray],
) -> pb.ModelInferResponse:
    """The response to `request`, with the outputs it asked for, raw or typed (see above)."""
    chosen = [(wanted, outputs[wanted.name]) for wanted in request.outputs]
    datatypes = [numpy_to_v2(array.dtype) for _, array in chosen]
    # The standard: raw contents, when used, cover every output.
    raw = any(wanted.binary for wanted, _ in chosen) or any(
        datatype not in CONTENTS_FIELD for datatype in datatypes
    )
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version)
    if request.id is not None:
        response.id = request.id
    for (wanted, array), datatype in zip(chosen, datatypes, strict=True):
        tensor = response.outputs.add(name=wanted.name, datatype=datatype, shape=array.shape)
        if raw:
            response.raw_output_contents.append(binary_bytes(array))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(_utf8(item) for item in array.ravel())
        else:
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(array.ravel().tolist())
    return response


def _utf8(item: object) -> bytes:
    return item if isinstance(item, bytes) else str(item).encode("utf-8")


def model_metadata(doc: Mapping[str, Any]) -> pb.ModelMetadataResponse:
    """ModelMetadataResponse from protocol.model_metadata's dict (the HTTP body)."""
    return pb.ModelMetadataResponse(
        name=doc["name"],
        versions=doc["versions"],
        platform=doc["platform"],
        inputs=[pb.ModelMetadataResponse.TensorMetadata(**spec) for spec in doc["inputs"]],
        outputs=[pb.ModelMetadataResponse.TensorMetadata(**spec) for spec in doc["outputs"]],
    )
