"""Which edge node each device streams to.

:class:`EdgeAssignment` is the one writer of a device's edge: when it registers (:meth:`admit`), when
it moves or its edge is lost (:meth:`relocate`), and when a placement is applied (:meth:`move`). Each
write publishes the per-edge device counts (``ecd_devices_per_edge``) at once, so the metric, the
operator view and the data plane read the same fact.

The rule (paper 003, see :mod:`cloud_server.placement`): a joining or moving device goes to the
cheapest *active* edge of the current placement when both its position and a placement are known,
else to the least loaded alive edge (devices per unit of capacity).
"""

from __future__ import annotations

from typing import Any, Callable

from cloud_server import placement
from cloud_server.edges import Edges
from cloud_server.leases import Leases
from cloud_server.registry import DeviceRecord, EdgeRecord, Registry
from ecd.clock import SYSTEM_CLOCK, Clock
from ecd.errors import UnavailableError
from ecd.scheduler_types import PlacementReport
from ecd.types import Position

MOVE_GRACE_S = 30.0  # an edge node may still serve a device this long after it moved away


def position_of(d: DeviceRecord) -> Position | None:
    return Position(d.lat, d.lon) if d.lat is not None and d.lon is not None else None


class EdgeAssignment:
    def __init__(self, registry: Registry, edges: Edges, leases: Leases, current: Callable[[], PlacementReport | None],
                 activation_cost: float, clock: Clock = SYSTEM_CLOCK):
        self.registry = registry
        self.edges = edges
        self.leases = leases
        self.current = current  # the applied placement (its active edges), or None
        self.activation_cost = activation_cost  # an edge's AC_j when it registered none
        self.clock = clock
        self.metrics: Any = None  # SchedulerMetrics, or None
        self._moved_from: dict[str, dict[str, float]] = {}  # device id -> {edge id it left: when}

    # --- deciding -------------------------------------------------------------------------------

    def sites(self, edges: list[EdgeRecord]) -> list[placement.Site]:
        """The edges that registered a position, as placement sees them."""
        return [placement.Site(e.edge_id, Position(e.lat, e.lon), e.activation_cost or self.activation_cost)
                for e in edges if e.lat is not None and e.lon is not None]

    @staticmethod
    def least_loaded(edges: list[EdgeRecord], counts: dict[str, int]) -> str:
        """The edge with the fewest devices per unit of capacity (for devices placement cannot place)."""
        return min(edges, key=lambda e: (counts.get(e.edge_id, 0) / max(e.capacity, 1e-9), e.edge_id)).edge_id

    def edge_for(self, position: Position | None = None) -> str:
        """The edge for a device at ``position`` (None: unknown), by the rule above."""
        edges = self.edges.alive()
        if not edges:
            raise UnavailableError(
                f"edge_endpoint: no edge node has registered or sent a heartbeat in the last {self.edges.timeout_s:g} s",
            )
        report = self.current()
        if position is not None and report is not None:
            chosen = placement.nearest_active(position, self.sites(edges), {e.edge_id for e in report.edges if e.active})
            if chosen is not None:
                return chosen
        return self.least_loaded(edges, self.registry.devices_per_edge(self.leases.live_since()))

    def serves(self, d: DeviceRecord, owner: str) -> bool:
        """Whether the edge node holding certificate ``owner`` may serve device ``d``: its edge now,
        or one it left less than ``MOVE_GRACE_S`` ago (frames it sent before it heard of the move)."""
        now = self.clock.time()
        edge_ids = [d.edge_id] + [e for e, t in self._moved_from.get(d.device_id, {}).items() if now - t < MOVE_GRACE_S]
        return any((e := self.registry.edge(edge_id)) is not None and e.owner == owner for edge_id in edge_ids)

    # --- writing (the only writes of a device's edge) ----------------------------------------------

    def admit(self, position: Position | None, **device: Any) -> DeviceRecord:
        """Add a registering device to the registry, on the edge :meth:`edge_for` names."""
        record = self.registry.add_device(edge_id=self.edge_for(position), **device)
        self.publish()
        return record

    def move(self, mapping: dict[str, str], previous: dict[str, str]) -> None:
        """Apply device -> edge moves, remembering each device's previous edge for ``MOVE_GRACE_S``."""
        now = self.clock.time()
        for device_id, edge_id in mapping.items():
            old = previous.get(device_id)
            if old and old != edge_id:
                self._moved_from.setdefault(device_id, {})[old] = now
        self.registry.set_device_edges(mapping)
        self.publish()

    def relocate(self, d: DeviceRecord, position: Position | None) -> DeviceRecord:
        """Move one device to the edge :meth:`edge_for` names for ``position`` (if that is another edge);
        returns its record as stored now."""
        edge = self.edge_for(position)
        if edge == d.edge_id:
            return d
        self.move({d.device_id: edge}, {d.device_id: d.edge_id})
        return self.registry.device(d.device_id)

    def publish(self) -> None:
        """The per-edge counts of live devices, for Prometheus."""
        if self.metrics is not None:
            self.metrics.devices_on_edges(self.registry.devices_per_edge(self.leases.live_since()),
                                          [e.edge_id for e in self.registry.edges()])
