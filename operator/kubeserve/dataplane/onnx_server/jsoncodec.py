"""JSON encoding and decoding, with orjson when it is installed.

Measured (docs/performance.md): parsing a 3x32x32 FP32 tensor (62 KB of JSON) takes about
1.4 ms with the stdlib and 0.27 ms with orjson, on a model that runs in about 2 ms. orjson also
writes numpy arrays directly, in the shortest form that reads back to the same float32, instead
of going through Python floats. The stdlib path stays as a fallback so the server still works
where orjson is missing.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

try:
    import orjson
except ImportError:  # pragma: no cover - exercised only where orjson is not installed
    orjson = None  # type: ignore[assignment]

ENGINE = "orjson" if orjson is not None else "json"


def loads(data: bytes) -> Any:
    """Parse JSON; raises ValueError (both engines' decode errors subclass it)."""
    if orjson is not None:
        return orjson.loads(data)
    return json.loads(data)


def dumps(doc: Any) -> bytes:
    """Serialise JSON; numpy arrays (numeric, C-contiguous) become flat or nested lists."""
    if orjson is not None:
        return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(doc, separators=(",", ":"), default=_default).encode()


def _default(value: object) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
