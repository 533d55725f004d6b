"""The cloud core's live placement (cloud_server/live_placement.py): when it is due, what it applies and
reports, exactly, on the test's clock."""

from __future__ import annotations

import dataclasses

import pytest
from cloud_core_harness import (
    A_POS,
    B_POS,
    NEAR_A,
    NEAR_B,
    Cloud,
    M,
)

from cloud_server import live_placement, placement
from cloud_server.live_placement import placement_report_from_dict
from ecd.errors import (
    PreconditionError,
    RequestError,
)
from ecd.types import (
    EdgeHeartbeat,
    Position,
)

# --- placement ---------------------------------------------------------------------------------


def test_placement_applies_the_solvers_choice_and_reports_it(cloud: Cloud) -> None:
    a, b = cloud.edge(1, A_POS, cost=0.5), cloud.edge(2, B_POS)
    dead = cloud.edge(3, Position(40.75, -74.0))
    blind = cloud.edge(4)  # no position: not a site, but alive
    cloud.clock.now += 2.5
    for e in (a, b, blind):
        cloud.core.edges.heartbeat(EdgeHeartbeat(e, 0.0, 0))
    cloud.clock.now += 1.0  # dead's heartbeat is 3.5 s old
    devices = [cloud.register(f"d{k}", position=p) for k, p in enumerate([NEAR_A, NEAR_A, NEAR_B, NEAR_B])]
    lost = cloud.register("lost")  # no position
    assert cloud.core.placement.due() == "edge joined"
    n = len(cloud.changes)
    report = cloud.core.placement.place(seed=1, trigger="test")
    sites = [placement.Site(a, A_POS, 0.5), placement.Site(b, B_POS, 5.0)]
    sites.sort(key=lambda s: s.edge_id)
    users = sorted((placement.User(d.device_id, Position(p.lat, p.lon), M.model_id)  # the registry's order: same time, by id
                    for d, p in zip(devices, [NEAR_A, NEAR_A, NEAR_B, NEAR_B])), key=lambda u: u.device_id)
    want = placement.place(sites, users, placement.DEFAULT_METHOD, 1)
    assert (report.version, report.method, report.trigger) == (1, placement.DEFAULT_METHOD, "test")
    assert (report.total_cost, report.activation_cost, report.service_cost) == (want.total_cost, want.activation_cost, want.service_cost)
    assert report.seconds > 0 and report.computed_unix_ms == int(cloud.clock.now * 1000)
    assert report.instance_json == want.to_json()
    active = set(want.active)
    mapping = {**want.device_edge}
    counts = {e: list(mapping.values()).count(e) for e in (a, b, blind)}
    mapping[lost.device_id] = min((e for e in (a, b, blind) if e in active),
                                  key=lambda e: (counts[e] / 10.0, e))
    counts[mapping[lost.device_id]] += 1
    assert {d.device_id: d.edge_id for d in report.devices} == mapping
    assert {d.device_id: d.edge_id for d in cloud.core.registry.devices()} == mapping
    by_edge = {e.edge_id: e for e in report.edges}
    assert set(by_edge) == {a, b, dead, blind}
    assert by_edge[a] == dataclasses.replace(by_edge[a], endpoint="127.0.0.1:1", position=A_POS, active=a in active, alive=True,
                                             devices=counts[a], activation_cost=0.5)
    assert (by_edge[b].active, by_edge[b].alive, by_edge[b].devices, by_edge[b].activation_cost) == (b in active, True, counts[b], 5.0)
    assert (by_edge[dead].active, by_edge[dead].alive, by_edge[dead].devices, by_edge[dead].position) == (False, False, 0,
                                                                                                        Position(40.75, -74.0))
    assert (by_edge[blind].active, by_edge[blind].alive, by_edge[blind].position) == (False, True, None)
    costs = {d.device_id: d.service_cost for d in report.devices}
    assert costs == {**want.device_cost, lost.device_id: 0.0}
    names = {d.device_id: (d.device_name, d.position) for d in report.devices}
    assert names[lost.device_id] == ("lost", None) and names[devices[2].device_id] == ("d2", NEAR_B)
    assert cloud.core.placement.current is report and cloud.core.placement._placed_alive == {a, b, blind}
    assert placement_report_from_dict(cloud.core.registry.latest_placement()) == report
    assert len(cloud.changes) == n + 1 and cloud.core.placement.due() is None
    assert cloud.runs("placement", placement.DEFAULT_METHOD, "ok") == 1.0 and cloud.seconds("placement") == 0.0
    assert cloud.prom.get_sample_value("ecd_placement_cost", {"part": "total"}) == report.total_cost
    assert cloud.prom.get_sample_value("ecd_placement_active_edges") == len(active)
    assert cloud.core.devices.get_assignment(lost.device_id, lost.token).placement_version == 1
    again = cloud.core.placement.place("otacs")
    assert (again.version, again.method, again.trigger) == (2, "otacs", "operator")
    assert cloud.runs("placement", "otacs", "ok") == 1.0


def test_placement_hands_the_solver_its_method_and_seed(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, int]] = []
    solve = placement.place

    def recording(sites, users, method, seed):  # the real solver, its arguments recorded
        asked.append((method, seed))
        return solve(sites, users, method, seed)

    monkeypatch.setattr(live_placement.placement, "place", recording)
    cloud.edge(1, A_POS)
    cloud.register(position=NEAR_A)
    cloud.core.placement.place()
    cloud.core.placement.place("otacs", seed=7)
    assert asked == [(placement.DEFAULT_METHOD, 0), ("otacs", 7)]


def test_placement_without_positions_spreads_devices_by_load(cloud: Cloud) -> None:
    a, b = cloud.edge(1), cloud.edge(2, capacity=20.0)
    ds = [cloud.register(f"d{k}") for k in range(3)]
    report = cloud.core.placement.place()
    assert (report.method, report.total_cost, report.activation_cost, report.service_cost, report.seconds, report.instance_json) == (
        "least loaded (no positions)", 0.0, 0.0, 0.0, 0.0, "")
    got = {d.device_id: d.edge_id for d in report.devices}
    assert sorted(got.values()) == sorted([a, b, b]) and set(got) == {d.device_id for d in ds}
    by_edge = {e.edge_id: e for e in report.edges}
    assert (by_edge[a].active, by_edge[a].devices, by_edge[b].active, by_edge[b].devices) == (True, 1, True, 2)
    assert all(d.service_cost == 0.0 and d.position is None for d in report.devices)


def test_placement_with_no_live_edge_is_refused_and_counted(cloud: Cloud) -> None:
    with pytest.raises(PreconditionError, match=r"^placement: none computed yet \(no edge node has registered\)$"):
        cloud.core.placement.report()
    assert cloud.core.placement.due() is None
    cloud.edge(1)
    cloud.clock.now += 5
    assert cloud.core.placement.due() is None
    with pytest.raises(PreconditionError, match=r"^edges: no edge node is alive \(registered, with a heartbeat in the last 3 s\) "
                                                r"to place devices on$"):
        cloud.core.placement.place("otacs")
    assert cloud.runs("placement", "otacs", "error") == 1.0 and cloud.seconds("placement") == 0.0
    assert cloud.runs("placement", "otacs", "ok") is None and cloud.changes == []
    with pytest.raises(RequestError, match=r"^method"):
        cloud.core.placement.place("random_walk")


def test_placement_is_due_when_devices_join_or_leave_at_most_once_per_debounce_period(cloud: Cloud) -> None:
    """Devices that join after the edges (or whose lease runs out) re-run placement, debounced; a
    device without a position changes nothing placement could place."""
    a, b = cloud.edge(1, A_POS), cloud.edge(2, B_POS)
    debounce = cloud.core.placement.debounce_s
    assert cloud.core.placement.due() == "edge joined"
    cloud.core.placement.place()
    cloud.register("blind")  # no position
    cloud.clock.now += debounce
    for edge in (a, b):
        cloud.core.edges.heartbeat(EdgeHeartbeat(edge, 0.0, 0))
    assert cloud.core.placement.due() is None
    d = cloud.register(position=NEAR_B)
    assert cloud.core.placement.due() == "devices joined"
    t0 = cloud.clock.now
    cloud.core.placement.place()
    cloud.register("late", position=NEAR_A)
    cloud.clock.now = t0 + debounce - 0.001
    for edge in (a, b):
        cloud.core.edges.heartbeat(EdgeHeartbeat(edge, 0.0, 0))
    assert cloud.core.placement.due() is None  # within the debounce period of the last placement
    cloud.clock.now = t0 + debounce
    assert cloud.core.placement.due() == "devices joined"
    cloud.core.placement.place()
    cloud.clock.now += cloud.core.leases.lease_s + 1  # every device's lease runs out; d calls again
    for edge in (a, b):
        cloud.core.edges.heartbeat(EdgeHeartbeat(edge, 0.0, 0))
    cloud.core.devices.authenticate(d.device_id, d.token)
    assert cloud.core.placement.due() == "devices left"
    assert {x.device_id for x in cloud.core.placement.place().devices} == {d.device_id}
    assert cloud.core.placement.due() is None


def test_placement_is_due_when_an_edge_joins_or_is_lost(cloud: Cloud) -> None:
    a = cloud.edge(1)
    assert cloud.core.placement.due() == "edge joined"
    cloud.core.placement.place()
    assert cloud.core.placement.due() is None
    b = cloud.edge(2)
    assert cloud.core.placement.due() == "edge joined"
    cloud.core.placement.place()
    cloud.core.edges.deregister(b)
    assert cloud.core.placement.due() == "edge lost"
    cloud.core.placement.place()
    assert cloud.core.placement.due() is None and cloud.core.placement._placed_alive == {a}
