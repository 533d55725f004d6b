"""One error catalog: domain errors -> gRPC status code + a message safe to show the caller.

Servicers call :func:`to_status` (unary RPCs abort with it; streams put it into the frame's
``Result.error`` so the stream goes on). Unknown exceptions become INTERNAL with a generic message
and are logged, never leaked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc

from ecd.errors import (
    ConfigError,
    EcdError,
    IntegrityError,
    ManifestError,
    ModelNotBuiltError,
    SplitRangeError,
    UnknownModelError,
)

log = logging.getLogger("ecd.transport.catalog")


@dataclass
class StatusError(EcdError):
    """An error that already knows its gRPC status; the message names the field."""

    code: grpc.StatusCode
    message: str

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, StatusError):
        return exc.code, exc.message
    from ecd.profiles import UnknownProfileError
    from ecd.split import PreferenceError, PrivacyNotMeasuredError

    if isinstance(exc, (PrivacyNotMeasuredError, ModelNotBuiltError)):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, IntegrityError):
        return grpc.StatusCode.DATA_LOSS, str(exc)
    if isinstance(exc, (PreferenceError, UnknownProfileError, ConfigError, SplitRangeError, UnknownModelError, ManifestError)):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, EcdError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    log.exception("internal error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error (logged on the server)"


_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


def status_code(value: int) -> grpc.StatusCode:
    """The StatusCode whose number is ``value`` (how a Result's error carries it)."""
    return _BY_VALUE.get(value, grpc.StatusCode.UNKNOWN)
