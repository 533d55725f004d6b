"""The placement the running cloud applies (paper 003, solved by :mod:`cloud_server.placement` over
the live records): when one is due, running it, applying it, and the applied report.

:class:`LivePlacement` is the one writer of the applied placement (the registry's latest placement
and ``current``) and of the placement metrics; the device moves it decides are written by
:class:`~cloud_server.assignment.EdgeAssignment`, the one writer of a device's edge. Among replicas
on one registry only the leader (:mod:`cloud_server.leader`) places, its write fenced by its term;
the others :meth:`~LivePlacement.follow` the registry's latest placement.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any, Callable

from cloud_server import placement
from cloud_server.assignment import EdgeAssignment
from cloud_server.edges import Edges
from cloud_server.leader import SchedulerLeader
from cloud_server.leases import Leases
from cloud_server.registry import Registry
from cloud_server.registry_leader import Fence
from ecd.clock import SYSTEM_CLOCK, Clock
from ecd.errors import PreconditionError
from ecd.scheduler_types import DevicePlacement, EdgePlacement, PlacementReport
from ecd.types import Position

log = logging.getLogger("ecd.cloud")


class LivePlacement:
    def __init__(self, registry: Registry, edges: Edges, leases: Leases, assignment: EdgeAssignment, leader: SchedulerLeader,
                 method: str = placement.DEFAULT_METHOD, on_change: Callable[[], None] = lambda: None,
                 clock: Clock = SYSTEM_CLOCK, debounce_s: float = 5.0):
        self.registry = registry
        self.edges = edges
        self.leases = leases
        self.assignment = assignment
        self.leader = leader  # only the leader places; the other replicas follow the registry
        self.method = placement.check_method(method)  # the default when an operator names none
        self.on_change = on_change  # the transport wakes the assignment watchers
        self.clock = clock
        self.debounce_s = debounce_s  # devices joining or leaving re-place at most this often
        self.metrics: Any = None  # SchedulerMetrics, or None
        self._lock = threading.Lock()  # one placement at a time (the monitor's and an operator's)
        self.current: PlacementReport | None = None
        self._placed_alive: set[str] = set()
        self._placed_in_term: int | None = None  # the leader's term this replica last placed in
        self.follow()

    def follow(self) -> bool:
        """Take the registry's latest placement as the applied one (another replica, the leader, may
        have written it); whether it was new here."""
        last = self.registry.latest_placement()
        if last is None or (self.current is not None and last["version"] == self.current.version):
            return False
        self.current = placement_report_from_dict(last)
        self._placed_alive = {e.edge_id for e in self.current.edges if e.alive}
        return True

    @property
    def version(self) -> int:
        return self.current.version if self.current else 0

    def due(self) -> str | None:
        """Why a new placement should run now, or None (asked on the leader): a placement exists and
        this replica has not placed in its term yet (at once: the leader before may have died
        between writing its placement and moving the devices, which a placement written first and
        moves second allows), an edge joined, was lost or left since the last one (at once), or
        devices with a position joined or left (their lease ran out) since the last one, at most
        once per ``debounce_s`` (devices come and go in bursts)."""
        alive = {e.edge_id for e in self.edges.alive()}
        if not alive:
            return None  # nothing to place devices on; the next edge to join triggers a placement
        if self.current is not None and self._placed_in_term != self.leader.term:
            return "leader changed"
        if alive - self._placed_alive:
            return "edge joined"
        if self._placed_alive - alive:
            return "edge lost"
        if self.current is not None and self.clock.time() - self.current.computed_unix_ms / 1000 < self.debounce_s:
            return None
        placed = {d.device_id for d in self.current.devices if d.position is not None} if self.current else set()
        present = {d.device_id for d in self.registry.devices(self.leases.live_since()) if d.lat is not None}
        if present - placed:
            return "devices joined"
        if placed - present:
            return "devices left"
        return None

    def place(self, method: str = "", seed: int = 0, trigger: str = "operator") -> PlacementReport:
        """Solve placement over the live edges and devices and apply it: every device's edge becomes
        the one placement names (devices without a position: the least loaded alive edge)."""
        method = placement.check_method(method) if method else self.method
        with self._lock:
            t0 = self.clock.perf_counter()
            try:
                fence = self.leader.fence()  # on a replica that does not lead: refused before any work
                self.follow()  # the placement this one follows: the leader before may have written one
                report = self._place(method, seed, trigger, fence)
                self._placed_in_term = fence.term
            except Exception:
                if self.metrics is not None:
                    self.metrics.run("placement", method, "error", self.clock.perf_counter() - t0)
                raise
            if self.metrics is not None:
                self.metrics.run("placement", method, "ok", self.clock.perf_counter() - t0)
                self.metrics.placed(report)
        log.info("[CloudServer.Place] v%d %s (%s): %d edges active, total cost %.3f, %.3f s", report.version, method,
                 trigger, sum(e.active for e in report.edges), report.total_cost, report.seconds)
        self.on_change()
        return report

    def _place(self, method: str, seed: int, trigger: str, fence: Fence) -> PlacementReport:
        alive = self.edges.alive()
        if not alive:
            raise PreconditionError(
                f"edges: no edge node is alive (registered, with a heartbeat in the last {self.edges.timeout_s:g} s) to place devices on"
            )
        devices = self.registry.devices(self.leases.live_since())
        sites = self.assignment.sites(alive)
        users = [placement.User(d.device_id, Position(d.lat, d.lon), d.model_id) for d in devices if d.lat is not None]
        solution = placement.place(sites, users, method, seed) if sites and users else None
        mapping = dict(solution.device_edge) if solution else {}
        counts = {e.edge_id: 0 for e in alive}
        for edge_id in mapping.values():
            counts[edge_id] += 1
        active_alive = [e for e in alive if solution and e.edge_id in solution.active] or alive
        for d in devices:
            if d.device_id not in mapping:
                mapping[d.device_id] = self.assignment.least_loaded(active_alive, counts)
                counts[mapping[d.device_id]] += 1
        alive_ids = {e.edge_id for e in alive}
        active = set(solution.active) if solution else {e for e in mapping.values() if e}
        report = PlacementReport(
            version=0,  # numbered by the registry when it is written
            method=method if solution else "least loaded (no positions)",
            trigger=trigger,
            total_cost=solution.total_cost if solution else 0.0,
            activation_cost=solution.activation_cost if solution else 0.0,
            service_cost=solution.service_cost if solution else 0.0,
            seconds=solution.seconds if solution else 0.0,
            computed_unix_ms=int(self.clock.time() * 1000),
            edges=[
                EdgePlacement(e.edge_id, e.endpoint, Position(e.lat, e.lon) if e.lat is not None else None,
                              e.edge_id in active, e.edge_id in alive_ids, counts.get(e.edge_id, 0),
                              e.activation_cost or self.assignment.activation_cost)
                for e in self.registry.edges()
            ],
            devices=[
                DevicePlacement(d.device_id, d.name, mapping[d.device_id],
                                Position(d.lat, d.lon) if d.lat is not None else None,
                                solution.device_cost.get(d.device_id, 0.0) if solution else 0.0)
                for d in devices
            ],
            instance_json=solution.to_json() if solution else "",
        )
        # written (fenced) before any device moves: a leader deposed while it solved moves nobody
        version = self.registry.add_placement(dataclasses.asdict(report), fence)
        self.assignment.move(mapping, {d.device_id: d.edge_id for d in devices})
        report = dataclasses.replace(report, version=version)
        self.current = report
        self._placed_alive = alive_ids
        return report

    def report(self) -> PlacementReport:
        if self.current is None:
            raise PreconditionError("placement: none computed yet (no edge node has registered)")
        return self.current


def placement_report_from_dict(d: dict) -> PlacementReport:
    """A placement as the registry stores it (its report as a JSON object) back to the record."""
    def pos(p: dict | None) -> Position | None:
        return Position(**p) if p else None

    return PlacementReport(
        **{k: v for k, v in d.items() if k not in ("edges", "devices")},
        edges=[EdgePlacement(**{**e, "position": pos(e["position"])}) for e in d["edges"]],
        devices=[DevicePlacement(**{**x, "position": pos(x["position"])}) for x in d["devices"]],
    )
