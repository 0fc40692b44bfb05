"""TF Serving warm-up records: <version>/assets.extra/tf_serving_warmup_requests.

TF Serving replays these requests when it loads a version, before it marks the version
AVAILABLE, so the first real request does not pay for graph initialisation and first-run kernel
setup. The file is a TFRecord of `tensorflow.serving.PredictionLog` messages, written here with
TensorFlow's TFRecordWriter and the protos of the `tensorflow-serving-api` package, then read
back and run on the SavedModel's serving signature.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LocalError

if TYPE_CHECKING:
    from .keras_savedmodel import Signature

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"  # the name TF Serving looks for
SERVING_API = "tensorflow-serving-api==2.21.0"


def warmup_inputs(signature: Signature, example: Any | None) -> dict[str, Any] | None:
    """One value per signature input: the package command's example when there is one, else
    zeros with the batch dimension set to 1. None when a shape cannot be known."""
    import numpy as np
    import tensorflow as tf

    if example is not None:
        [spec] = signature.inputs  # verify() allows an example for single-input models only
        return {spec.name: np.asarray(example).astype(tf.as_dtype(spec.dtype).as_numpy_dtype)}
    inputs = {}
    for spec in signature.inputs:
        dims = (1, *spec.shape[1:]) if spec.shape and spec.shape[0] is None else spec.shape
        shape = tuple(dim for dim in dims if dim is not None)
        if len(shape) != len(dims):
            return None  # an unknown dimension past the batch one: no value fits every model
        dtype = tf.as_dtype(spec.dtype)
        # as_numpy_dtype is `object` for strings, whose zeros are not strings.
        inputs[spec.name] = np.zeros(
            shape, np.bytes_ if dtype == tf.string else dtype.as_numpy_dtype
        )
    return inputs


def write_warmup(version_dir: Path, signature_name: str, inputs: Mapping[str, Any]) -> Path:
    """One PredictionLog holding a PredictRequest for `signature_name`. The request names no
    model: TF Serving runs warm-up on the version it is loading, whatever the served name."""
    import tensorflow as tf

    prediction_log_pb2, predict_pb2 = _serving_api()
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = signature_name
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    path = version_dir / WARMUP_DIR / WARMUP_FILE
    path.parent.mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(log.SerializeToString())
    return path


def replay(path: Path, function: Any) -> int:
    """Read the records back and run each request on the signature `function`, as TF Serving
    will at load; returns how many ran."""
    import tensorflow as tf

    prediction_log_pb2, _ = _serving_api()
    count = 0
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        inputs = {name: tf.constant(tf.make_ndarray(t)) for name, t in request.inputs.items()}
        try:
            function(**inputs)
        except Exception as exc:
            raise LocalError(f"{path}: a warm-up request fails on the SavedModel: {exc}") from exc
        count += 1
    return count


def _serving_api() -> tuple[Any, Any]:
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError as exc:
        raise LocalError(
            "TF Serving warm-up records need the tensorflow-serving-api package: "
            f"pip install --no-deps {SERVING_API} (it asks for `tensorflow`, which "
            "tensorflow-cpu already provides; without --no-deps pip adds the full tensorflow)"
        ) from exc
    return prediction_log_pb2, predict_pb2
