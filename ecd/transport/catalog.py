"""One error catalog for the gRPC seam: a runtime error becomes a gRPC status code and a message
safe to show the caller.

Each :class:`~ecd.errors.EcdError` names its status (``INVALID_ARGUMENT``, ``FAILED_PRECONDITION``,
…); this module maps the name to :class:`grpc.StatusCode`. Unknown exceptions become INTERNAL with a
generic message and are logged, never leaked. Unary servicers abort with :func:`to_status`; stream
servicers answer the frame with an error result, so the stream goes on.
"""

from __future__ import annotations

import grpc

from ecd.errors import describe
from ecd.transport.serde import status_code

__all__ = ["to_status"]


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    status, message = describe(exc)
    return status_code(status), message
