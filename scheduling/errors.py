"""The schedulers' errors: one base per kind of decision, all :class:`ecd.errors.EcdError`.

Each message is one line naming the field (or file) it is about, so a CLI or a service can show it
as it is.
"""

from __future__ import annotations

from ecd.errors import EcdError

__all__ = ["SchedulingError", "AllocationError", "QualityError"]


class SchedulingError(EcdError, ValueError):
    """Bad input to a scheduler, or a decision that cannot be made; the message names the field."""


class AllocationError(SchedulingError):
    """An allocation problem (TAPP, coverage-aware) that is malformed or cannot be solved."""


class QualityError(SchedulingError):
    """Reports or a site list that the quality schedulers cannot use."""
