"""Request failures, each carrying the HTTP status the client should get.

The service layer raises these; the HTTP layer turns them into `{"error": message}` with the
status. Anything else that escapes is a bug and becomes a 500 with the exception's message.
"""

from __future__ import annotations


class ServingError(Exception):
    """A request failed; `status` is the HTTP status code to answer with."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServingError):
    """The request is malformed or does not match the model's signature."""

    status = 400


class ModelNotFound(ServingError):
    """The URL names a model (or version) this server does not serve."""

    status = 404


class PayloadTooLarge(ServingError):
    """The body is larger than --max-body-bytes."""

    status = 413


class InferenceFailed(ServingError):
    """ONNX Runtime raised while running this request."""

    status = 500


class NotReady(ServingError):
    """The model is still loading or warming up, or the server is draining."""

    status = 503
