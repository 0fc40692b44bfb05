"""Datatype names: Open Inference Protocol v2 <-> numpy <-> ONNX Runtime type strings.

v2 names are the ones Triton and KServe clients send (`FP32`, `INT64`, `BYTES`, ...). BYTES maps to
ONNX `tensor(string)` and to numpy object arrays of `str`, which is what ONNX Runtime's Python API
takes and returns for string tensors.
"""

from __future__ import annotations

import numpy as np

# Little-endian explicitly: the binary tensor extension is defined as little-endian, and fixing
# the byte order here lets `np.frombuffer` read request bytes without a copy.
V2_TO_NUMPY: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

# ONNX Runtime's NodeArg.type strings. bfloat16 is listed so metadata can name it, but numpy has
# no bfloat16, so such inputs cannot be fed (the request fails with a clear 400).
ORT_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
    "tensor(bfloat16)": "BF16",
}


def numpy_to_v2(dtype: np.dtype[np.generic]) -> str:
    """The v2 name of an output array's dtype (ONNX Runtime returns native-order arrays)."""
    if dtype.kind in ("O", "U", "S"):
        return "BYTES"
    for name, candidate in V2_TO_NUMPY.items():
        if candidate.kind == dtype.kind and candidate.itemsize == dtype.itemsize:
            return name
    raise ValueError(f"no v2 datatype for numpy dtype {dtype}")
