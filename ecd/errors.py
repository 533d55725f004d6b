"""One error hierarchy for the runtime, and the status each error is reported with.

Library code and the service cores raise these; entry points decide how to report them (the CLI
prints the message and exits non-zero; the gRPC seam, :mod:`ecd.transport.catalog`, turns the
``status`` into a gRPC status code). Each message names the field, file or model it is about, so it
can be shown to a caller as it is.

``status`` uses the canonical status names (google.rpc.Code, which gRPC shares): they are the
transport-neutral vocabulary a per-frame error result carries.
"""

from __future__ import annotations

import logging
from typing import ClassVar

log = logging.getLogger("ecd.errors")

INTERNAL = "INTERNAL"


class EcdError(Exception):
    """Base of every error the runtime reports to a user."""

    status: ClassVar[str] = "INVALID_ARGUMENT"


class RequestError(EcdError, ValueError):
    """A request field with a value the runtime cannot use (the message names the field)."""


class PreferenceError(RequestError):
    """Weights or a split floor the split decision cannot use; the message names the field."""


class PreconditionError(EcdError):
    """A well-formed request the current state refuses (wrong model version, below the floor, …)."""

    status = "FAILED_PRECONDITION"


class AuthenticationError(EcdError):
    """A missing or unknown device token."""

    status = "UNAUTHENTICATED"


class PermissionDeniedError(EcdError):
    """A caller this service does not take the call from (e.g. an operator call from elsewhere)."""

    status = "PERMISSION_DENIED"


class NotFoundError(EcdError):
    """A reference to something the registry does not hold (an edge id, …)."""

    status = "NOT_FOUND"


class UnavailableError(EcdError):
    """A peer the request needs cannot be reached now; retrying later may work."""

    status = "UNAVAILABLE"


class LimitError(EcdError):
    """A request over a configured size or rate limit (the message names the limit)."""

    status = "RESOURCE_EXHAUSTED"


class UnknownModelError(EcdError, ValueError):
    """A model name that is neither bundled, built, nor a path to a manifest."""

    def __init__(self, name: str, known: list[str]):
        self.name = name
        self.known = sorted(known)
        super().__init__(f"unknown model {name!r}; known models: {', '.join(self.known)}")


class ModelNotBuiltError(EcdError):
    """A known model whose ONNX blocks have not been built on this machine yet."""

    status = "FAILED_PRECONDITION"


class ManifestError(EcdError, ValueError):
    """A manifest that is malformed or of an unsupported schema version."""


class IntegrityError(EcdError):
    """A block file that is missing or whose sha256 does not match the manifest."""

    status = "DATA_LOSS"


class InputSpecError(EcdError, ValueError):
    """A tensor whose shape or dtype does not match what a partition expects."""


class SplitRangeError(EcdError, ValueError):
    """A block range outside ``0 <= start <= stop <= n_blocks``."""


class MissingExtraError(EcdError):
    """An operation that needs an optional extra (e.g. torch for building models)."""


class ConfigError(EcdError, ValueError):
    """A flag, setting or option with a value the runtime cannot use."""


class PeerError(EcdError):
    """Another service refused or could not take a call made on the caller's behalf; ``status`` is
    the status it answered with (the message starts with the peer: ``cloud: UNAVAILABLE: ...``)."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status  # type: ignore[misc]  # the peer's, per instance


def describe(exc: BaseException) -> tuple[str, str]:
    """(status name, message safe to show the caller) for any exception.

    An :class:`EcdError` keeps its own status and message; anything else is a bug: it is logged
    with its traceback and reported as INTERNAL with a generic message, never leaked.
    """
    if isinstance(exc, EcdError):
        return exc.status, str(exc)
    log.error("internal error", exc_info=exc)
    return INTERNAL, "internal error (logged on the server)"
