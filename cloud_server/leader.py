"""Which cloud replica runs the schedulers: one leader among the replicas sharing a registry.

Every replica serves devices and edge nodes; only the holder of the registry's scheduler lease
places devices (:mod:`cloud_server.live_placement`) and writes placements, fenced by its term
(:mod:`cloud_server.registry_leader`). The lease lasts ``ttl_s``; the leader renews it at each check
of the placement monitor, so when the leader dies another replica leads within ``ttl_s`` plus one
check. A replica that cannot reach the database does not lead (it could not fence its writes).

On SQLite (one replica, the embedded default) the one replica takes the lease at once and keeps it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from typing import Any

from cloud_server.registry import Registry
from cloud_server.registry_leader import Fence
from ecd.errors import PreconditionError, UnavailableError

log = logging.getLogger("ecd.cloud")

LEASE = "scheduler"


class NotLeaderError(PreconditionError):
    """A scheduler call reached a replica that does not lead."""


def default_holder() -> str:
    """This process, among replicas on several hosts: host, pid and a random part (a restarted
    replica is a new holder, so it never renews its predecessor's lease by mistake)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class SchedulerLeader:
    def __init__(self, registry: Registry, ttl_s: float = 5.0, holder: str = ""):
        self.registry = registry
        self.ttl_s = ttl_s
        self.holder = holder or default_holder()
        self.term: int | None = None  # the term this replica leads in, or None
        self.metrics: Any = None  # SchedulerMetrics, or None

    @property
    def leading(self) -> bool:
        return self.term is not None

    def renew(self) -> bool:
        """Renew (or try to take) the lease; whether this replica leads now. Logged on a change."""
        try:
            term = self.registry.hold_lease(LEASE, self.holder, self.ttl_s)
        except UnavailableError as e:
            term = None
            if self.term is not None:
                log.warning("[CloudServer.Leader] cannot reach the registry (%s): no longer leading", e)
        if term != self.term:
            if term is not None:
                log.info("[CloudServer.Leader] %s leads the schedulers (term %d)", self.holder, term)
            elif self.term is not None:
                log.warning("[CloudServer.Leader] %s no longer leads the schedulers (term %d ended)", self.holder, self.term)
            self.term = term
        if self.metrics is not None:
            self.metrics.leader.set(1 if term is not None else 0)
        return term is not None

    def release(self) -> None:
        """Give the lease up (this replica is stopping): another leads at its next check, not after
        the lease would have expired."""
        if self.term is not None:
            with contextlib.suppress(UnavailableError):
                self.registry.release_lease(LEASE, self.holder)
            log.info("[CloudServer.Leader] %s gave up the schedulers (term %d)", self.holder, self.term)
            self.term = None
            if self.metrics is not None:
                self.metrics.leader.set(0)

    def fence(self) -> Fence:
        """What a scheduler's write presents, the lease just renewed; refuses (naming the leader) on a
        replica that does not lead."""
        if not self.renew():
            leader = self.registry.lease_holder(LEASE)
            raise NotLeaderError(f"scheduler: this replica ({self.holder}) does not lead the schedulers; "
                                 f"{'the leader is ' + leader if leader else 'no replica leads right now'}: ask it")
        return Fence(LEASE, self.holder, self.term)
