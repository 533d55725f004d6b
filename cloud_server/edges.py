"""Edge nodes as the cloud sees them: registration, ownership, liveness.

:class:`Edges` is the one writer of the edge rows (registration, heartbeats, leaving) and the one
judge of which edges are alive: an edge node silent for ``timeout_s`` gets no new devices, and the
next placement moves its devices away. An edge node acts only on the rows its own certificate
registered (``owner``, the name on its edge certificate; empty on a plaintext loopback cloud).
"""

from __future__ import annotations

import math

from cloud_server.registry import EdgeRecord, Registry
from cloud_server.registry_storage import RegistryFullError
from ecd.addresses import canonical_endpoint
from ecd.clock import SYSTEM_CLOCK, Clock
from ecd.errors import NotFoundError, PermissionDeniedError, RequestError
from ecd.limits import MAX_ENDPOINT_CHARS, check_name, printable
from ecd.types import EdgeHeartbeat, EdgeRegistration

REVOKED_NOTICE_S = 60.0  # heartbeats name the devices revoked this recently


class Edges:
    def __init__(self, registry: Registry, timeout_s: float = 3.0, clock: Clock = SYSTEM_CLOCK):
        self.registry = registry
        self.timeout_s = timeout_s
        self.clock = clock
        self._heard: dict[str, float] = {}  # edge id -> its last heartbeat here, kept when the registry could not store it

    def alive(self) -> list[EdgeRecord]:
        """The edge nodes heard from (registration or heartbeat, stored or only heard here while the
        registry's disk was full) within ``timeout_s``."""
        now = self.clock.time()
        return [e for e in self.registry.edges() if self.is_alive(e, now)]

    def last_heard(self, edge: EdgeRecord) -> float:
        """When the edge node was last heard from: its stored heartbeat, or a later one this replica
        heard but could not store."""
        return max(edge.last_seen_unix, self._heard.get(edge.edge_id, 0.0))

    def is_alive(self, edge: EdgeRecord, now: float) -> bool:
        """The one liveness rule: what the data plane assigns by is what the operator view shows."""
        return now - self.last_heard(edge) <= self.timeout_s

    def register(self, req: EdgeRegistration, owner: str = "") -> str:
        """Register (or re-register) the edge node at ``req.endpoint``; an endpoint another
        certificate registered is refused."""
        check_name(req.endpoint, "endpoint", MAX_ENDPOINT_CHARS)
        endpoint = canonical_endpoint(req.endpoint)  # one spelling: another edge cannot take this one's by an alias
        if endpoint is None:
            raise RequestError(f"endpoint: expected host:port, got {printable(req.endpoint)!r}")
        if not (math.isfinite(req.capacity) and req.capacity > 0):
            raise RequestError(f"capacity: expected a finite value > 0, got {req.capacity}")
        if not (math.isfinite(req.activation_cost) and req.activation_cost >= 0):
            raise RequestError(f"activation_cost: expected a finite value >= 0, got {req.activation_cost}")
        position = req.position.check("position") if req.position is not None else None
        record = self.registry.add_edge(
            endpoint, req.capacity, lat=position.lat if position else None, lon=position.lon if position else None,
            activation_cost=req.activation_cost, owner=owner,
        )
        if record is None:
            raise PermissionDeniedError(f"endpoint: {endpoint} is registered by another edge node")
        return record.edge_id

    def check_owner(self, edge_id: str, owner: str) -> None:
        edge = self.registry.edge(edge_id)
        if edge is None:
            raise NotFoundError(f"edge_id: {edge_id!r} is not registered")
        if edge.owner != owner:
            raise PermissionDeniedError(f"edge_id: {edge_id} belongs to another edge node")

    def deregister(self, edge_id: str, owner: str = "") -> None:
        """An edge node leaving (e.g. on SIGTERM): it gets no new devices, and the next placement moves
        its devices away."""
        self.check_owner(edge_id, owner)
        self._heard.pop(edge_id, None)
        if not self.registry.remove_edge(edge_id):
            raise NotFoundError(f"edge_id: {edge_id!r} is not registered")

    def heartbeat(self, req: EdgeHeartbeat, owner: str = "") -> list[str]:
        """Note the edge alive; returns the devices revoked lately (the edge drops their cached
        assignments, so a revoked token is refused there within a heartbeat)."""
        self.check_owner(req.edge_id, owner)
        self._heard[req.edge_id] = self.clock.time()
        try:
            if not self.registry.heartbeat(req.edge_id, req.load, req.queue_depth):
                raise NotFoundError(f"edge_id: {req.edge_id!r} is not registered")
        except RegistryFullError:
            pass  # the edge is alive all the same: a full disk at the cloud must not make live edges look dead
        return self.registry.revoked_since(self.clock.time() - REVOKED_NOTICE_S)
