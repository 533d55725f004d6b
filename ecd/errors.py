"""One error hierarchy for the runtime.

Library code raises these; entry points (the CLI, later the gRPC error catalog) decide how to
report them. Each message names the field, file or model it is about, so it can be shown to a user
as it is.
"""

from __future__ import annotations


class EcdError(Exception):
    """Base of every error the runtime reports to a user."""


class UnknownModelError(EcdError, ValueError):
    """A model name that is neither bundled, built, nor a path to a manifest."""

    def __init__(self, name: str, known: list[str]):
        self.name = name
        self.known = sorted(known)
        super().__init__(f"unknown model {name!r}; known models: {', '.join(self.known)}")


class ModelNotBuiltError(EcdError):
    """A known model whose ONNX blocks have not been built on this machine yet."""


class ManifestError(EcdError, ValueError):
    """A manifest that is malformed or of an unsupported schema version."""


class IntegrityError(EcdError):
    """A block file that is missing or whose sha256 does not match the manifest."""


class InputSpecError(EcdError, ValueError):
    """A tensor whose shape or dtype does not match what a partition expects."""


class SplitRangeError(EcdError, ValueError):
    """A block range outside ``0 <= start <= stop <= n_blocks``."""


class MissingExtraError(EcdError):
    """An operation that needs an optional extra (e.g. torch for building models)."""


class ConfigError(EcdError, ValueError):
    """A flag, setting or option with a value the runtime cannot use."""
