"""Serving errors: each carries the HTTP status Triton answers with and the matching gRPC code.

Every error the server sends is JSON ``{"error": "..."}`` over HTTP, or a gRPC status with the
message. The classes are ``UserError`` subclasses: the message says what was wrong.
"""

from __future__ import annotations

from tensorkiln.errors import UserError


class ServeError(UserError):
    """A request the server cannot answer with a result."""

    http_status = 500
    grpc_code = "INTERNAL"
    reason = "OTHER"  # the `reason` label of nv_inference_request_failure


class InvalidArgument(ServeError):
    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class NotFound(ServeError):
    http_status = 404
    grpc_code = "NOT_FOUND"


class PayloadTooLarge(ServeError):
    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class Unavailable(ServeError):
    """Rejected now (queue full, timed out, not ready, shutting down): try again later."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
    reason = "REJECTED"


class Unsupported(ServeError):
    http_status = 501
    grpc_code = "UNIMPLEMENTED"


class Internal(ServeError):
    http_status = 500
    grpc_code = "INTERNAL"
    reason = "BACKEND"
