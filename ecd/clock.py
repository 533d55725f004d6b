"""The clock a control plane reads, passed in rather than imported, so that a test moves time to a
lease's or a timeout's exact boundary instead of sleeping through it.

The :mod:`time` module itself is the system clock: it has both methods. ``time()`` is the wall clock
in unix seconds, the one the registry stores (leases, heartbeats, revocations, move grace periods are
compared with stored times, so they all read this one); ``perf_counter()`` times work done (a
scheduler run's seconds), never a deadline.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float: ...

    def perf_counter(self) -> float: ...


SYSTEM_CLOCK: Clock = time
