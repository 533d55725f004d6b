"""The registry's write path when its storage fills up (PostgreSQL's advice on a full disk: refuse
writes, keep reads, say so).

A full disk is not a crash: reads still work, frames still flow (they write nothing that cannot
wait), and restarting the cloud would free no space and stop every frame. So a write that fails for
space is refused with a named status (:class:`RegistryFullError`, ``UNAVAILABLE: db: registry disk
full``), the state changes once, with one log line, and one more when a write succeeds again;
operators see it as ``ecd_registry_writable`` and as the ``ecd.registry`` service of gRPC health,
while the overall health, which liveness probes read, stays ``SERVING``.
"""

from __future__ import annotations

import enum
import logging
import threading
import time

from sqlalchemy.exc import DBAPIError

from ecd.errors import UnavailableError

log = logging.getLogger("ecd.cloud")

SQLITE_FULL = ("database or disk is full",)  # what SQLite says when its file (or journal) cannot grow
POSTGRES_DISK_FULL = "53100"  # SQLSTATE disk_full


class StorageState(enum.Enum):
    WRITABLE = "writable"
    FULL = "full"


class RegistryFullError(UnavailableError):
    """A write the registry's storage has no room for; retrying once space returns works."""


def is_disk_full(error: BaseException) -> bool:
    cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    if getattr(cause, "sqlstate", None) == POSTGRES_DISK_FULL:
        return True
    text = str(cause).lower()
    return any(s in text for s in SQLITE_FULL) or "no space left on device" in text


class Storage:
    """The write path's state; its one writer is the registry (a write refused for space, a probe).

    Hysteresis: on a full disk some writes still fit (a page freed, a journal reused), so one write
    going through proves nothing. The state is full from the first refusal until a probe write goes
    through with no refusal for ``settle_s`` before it: one log line each way, not one per write.
    """

    def __init__(self, where: str, settle_s: float = 3.0) -> None:
        self.where = where
        self.settle_s = settle_s
        self.state = StorageState.WRITABLE
        self._last_refusal = 0.0
        self._lock = threading.Lock()

    def full(self, reason: str) -> RegistryFullError:
        """A write failed for space: the error to raise (the first one logs)."""
        with self._lock:
            self._last_refusal = time.monotonic()
            if self.state is StorageState.WRITABLE:
                self.state = StorageState.FULL
                log.error("[CloudServer.Registry] %s: disk full (%s): writes are refused until space returns; reads, "
                          "frames and heartbeats go on", self.where, reason)
        return RegistryFullError(f"db: registry disk full ({self.where}): {reason}")

    def probed(self) -> None:
        """A probe write went through: writable again, once no write was refused for ``settle_s``."""
        with self._lock:
            if self.state is StorageState.FULL and time.monotonic() - self._last_refusal >= self.settle_s:
                self.state = StorageState.WRITABLE
                log.warning("[CloudServer.Registry] %s: writes go through again", self.where)
