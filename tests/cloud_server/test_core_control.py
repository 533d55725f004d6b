"""The cloud core's control plane without gRPC, on a clock the test moves: registration, leases,
edge nodes and their ownership, moves and location reports, checked at their exact boundaries."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from cloud_server import campaigns, placement
from cloud_server.assignment import EdgeAssignment
from cloud_server.config import CloudConfig
from cloud_server.core import (
    CloudCore,
)
from cloud_server.crowdsensing import Crowdsensing
from cloud_server.edges import Edges
from cloud_server.leader import SchedulerLeader
from cloud_server.leases import Leases
from cloud_server.live_placement import LivePlacement
from cloud_server.heads import BUILTIN_HEAD
from cloud_server.registry import EdgeRecord, Registry, hash_token
from ecd import codec
from ecd.batching import BatchingConfig
from ecd.config import MiB
from ecd.errors import (
    AuthenticationError,
    LimitError,
    PreconditionError,
    RequestError,
    UnavailableError,
)
from ecd.limits import (
    MAX_PROFILE_BYTES,
)
from ecd.profiles import (
    device_to_toml,
    known_devices,
    known_radios,
    load_device,
    load_radio,
)
from ecd.split import Preferences, decide_split
from ecd.types import (
    Assignment,
    DeviceRegistration,
    EdgeHeartbeat,
    EdgeRegistration,
    Encoding,
    HeadSpec,
    LocationReport,
    Position,
    PreferencesUpdate,
    Split,
)

from sqlalchemy import select

from cloud_server.registry_schema import locations as LOC
from cloud_core_harness import A_POS, B_POS, NEAR_A, NEAR_B, M, N, Clock, Cloud, campaign_spec


def test_a_new_core_serves_its_models_with_the_documented_defaults(tmp_path: Path) -> None:
    c = CloudCore(Registry(str(tmp_path / "r.sqlite3")), [M])
    assert (c.devices.edge_boundary, c.max_tensor_bytes, c.edges.timeout_s, c.max_batch, c.leases.lease_s) == (None, 16 * MiB, 3.0, codec.MAX_BATCH, 600.0)
    assert (c.placement.method, c.assignment.activation_cost) == (placement.DEFAULT_METHOD, 5.0)
    assert c.placement.current is None and c.placement._placed_alive == set() and c.metrics is None and c.leases._written == {} and c.assignment._moved_from == {}
    assert c.crowdsensing.limits == campaigns.Limits()
    assert c.devices.per_certificate == CloudConfig().devices_per_certificate == 4  # as the service's default
    assert c.on_change() is None  # the default watcher does nothing
    served = c.models[M.model_id]
    assert served.manifest is M and list(served.heads) == [BUILTIN_HEAD] and served.heads[BUILTIN_HEAD].labels == tuple(M.labels)
    assert served.batcher is not None and served.batcher.config == BatchingConfig()
    custom = CloudCore(Registry(str(tmp_path / "s.sqlite3")), [M], batching=BatchingConfig(4, 0.01), placement_activation_cost=0.0,
                       placement_method="otacs")
    assert custom.models[M.model_id].batcher.config == BatchingConfig(4, 0.01) and custom.assignment.activation_cost == 0.0
    assert custom.placement.method == "otacs"


def test_the_parts_built_alone_keep_the_cores_defaults(tmp_path: Path) -> None:
    """A lease of 600 s, an edge timeout of 3 s and placement's debounce of 5 s, as the core's own defaults."""
    clock = Clock()
    registry = Registry(str(tmp_path / "r.sqlite3"), clock=clock.time)
    assert Leases(registry, clock=clock).live_since() == clock.now - 600.0
    edges = Edges(registry, clock=clock)
    e = edges.register(EdgeRegistration("127.0.0.1:1", 1.0))
    clock.now += 3.0
    assert [x.edge_id for x in edges.alive()] == [e]
    clock.now += 0.001
    assert edges.alive() == []
    leases = Leases(registry, clock=clock)
    live = LivePlacement(registry, edges, leases, EdgeAssignment(registry, edges, leases, lambda: None, 5.0, clock),
                         SchedulerLeader(registry))
    assert (live.method, live.debounce_s) == (placement.DEFAULT_METHOD, 5.0)


def test_the_parts_built_alone_work_without_metrics(tmp_path: Path) -> None:
    """A part publishes to the scheduler metrics only once it has them (the core hands them over):
    built alone, it applies placements and runs schedulers all the same, counting them nowhere."""
    clock = Clock()
    registry = Registry(str(tmp_path / "r.sqlite3"), clock=clock.time)
    edges, leases, leader = Edges(registry, clock=clock), Leases(registry, clock=clock), SchedulerLeader(registry)
    assignment = EdgeAssignment(registry, edges, leases, lambda: None, 5.0, clock)
    live = LivePlacement(registry, edges, leases, assignment, leader, clock=clock)
    crowd = Crowdsensing(registry, edges, leases, leader, clock=clock)
    e = edges.register(EdgeRegistration("127.0.0.1:1", 1.0))
    assignment.publish()
    assert [(x.edge_id, x.alive) for x in live.place().edges] == [(e, True)]
    with pytest.raises(PreconditionError, match=r"^campaign: no device above the reputation floor has a position inside the grid$"):
        crowd.create_campaign(campaign_spec())


@pytest.mark.parametrize("cost", [-1.0, float("nan"), float("inf")])
def test_a_bad_activation_cost_is_refused_by_name(tmp_path: Path, cost: float) -> None:
    with pytest.raises(RequestError, match=rf"^placement_activation_cost: expected a finite value >= 0, got {cost}$"):
        CloudCore(Registry(str(tmp_path / "r.sqlite3")), [M], placement_activation_cost=cost)


def test_a_restarted_core_keeps_its_heads_and_its_placement(cloud: Cloud, tmp_path: Path) -> None:
    a, b = cloud.edge(1, A_POS), cloud.edge(2, B_POS)
    cloud.register(position=NEAR_A)
    spec = HeadSpec(M.model_id, "odd", ["even", "odd"], [float(k % 2 == j) for j in range(2) for k in range(10)], [0.5, -0.5], "probabilities")
    cloud.core.models.add_head(spec)
    report = cloud.core.placement.place()
    again = CloudCore(cloud.core.registry, [M], clock=cloud.clock)
    assert again.models.list_heads(M.model_id) == cloud.core.models.list_heads(M.model_id)
    assert again.placement.current == report and again.placement._placed_alive == {a, b}


def test_a_device_registers_with_every_field_stored(cloud: Cloud) -> None:
    edge = cloud.edge(1)
    a = cloud.register("phone", split=3, position=NEAR_A, prefs=Preferences(0.7, 0.3, 1), encoding=Encoding.INT8,
                       sensors={"camera": 8.5})
    d = cloud.core.registry.device(a.device_id)
    assert d.token == hash_token(a.token) and len(a.token) == 32
    assert (d.name, d.profile, d.radio, d.w_energy, d.w_privacy, d.min_split) == ("phone", "pi4", "wifi", 0.7, 0.3, 1)
    assert (d.model_id, d.model_version, d.split_device, d.split_edge, d.encoding) == (M.model_id, M.version, 3, N - 1, "int8")
    assert (d.reputation, d.edge_id, d.lat, d.lon, json.loads(d.sensors)) == (campaigns.NEUTRAL_REPUTATION, edge, NEAR_A.lat, NEAR_A.lon,
                                                                             {"camera": 8.5})
    assert cloud.core.registry.locations() == {a.device_id: [(NEAR_A.lat, NEAR_A.lon)]}
    assert cloud.core.registry._rows(select(LOC.c.unix_ms)) == [(int(cloud.clock.now * 1000),)]
    recommended = decide_split(M, load_device("pi4"), load_radio("wifi"), Preferences(0.7, 0.3, 1)).recommended
    assert a == Assignment(a.device_id, a.token, "127.0.0.1:1", M.model_id, M.version, Split(3, N - 1), recommended,
                           Preferences(0.7, 0.3, 1), edge, 0, [], Encoding.INT8)
    nameless = cloud.register("", position=None)
    got = cloud.core.registry.device(nameless.device_id)
    assert got.name == "device" and (got.lat, got.lon) == (None, None) and got.sensors == "{}"
    assert set(cloud.core.registry.locations()) == {a.device_id}


def test_a_measured_profile_is_stored_by_its_name_and_recommends_nothing_on_update(cloud: Cloud) -> None:
    cloud.edge(1)
    measured = dataclasses.replace(load_device("pi4"), name="my-phone")
    a = cloud.register(profile=device_to_toml(measured))
    assert cloud.core.registry.device(a.device_id).profile == "measured:my-phone"
    assert a.recommended_split == decide_split(M, measured, load_radio("wifi"), Preferences(0.6, 0.4, 0)).recommended
    b = cloud.core.devices.update_preferences(PreferencesUpdate(a.device_id, a.token, Preferences(0.1, 0.9, 1), 4))
    assert b.recommended_split == 4 and b.split == Split(4, N - 1) and b.token == a.token


def test_preferences_update_stores_them_and_recommends_with_the_profile(cloud: Cloud) -> None:
    cloud.edge(1)
    a = cloud.register(split=2)
    prefs = Preferences(0.9, 0.1, 0)  # energy first: the utility would offload everything
    b = cloud.core.devices.update_preferences(PreferencesUpdate(a.device_id, a.token, prefs, N))
    assert b.recommended_split == decide_split(M, load_device("pi4"), load_radio("wifi"), prefs).recommended != N
    assert (b.split, b.preferences, b.token, b.device_id) == (Split(N, N), prefs, a.token, a.device_id)
    d = cloud.core.registry.device(a.device_id)
    assert (d.w_energy, d.w_privacy, d.min_split, d.split_device, d.split_edge) == (0.9, 0.1, 0, N, N)
    prefs = Preferences(0.2, 0.8, 2)
    with pytest.raises(PreconditionError, match=r"^split_device: 1 is below the device's floor \(min_split 2\)$"):
        cloud.core.devices.update_preferences(PreferencesUpdate(a.device_id, a.token, prefs, 1))
    with pytest.raises(AuthenticationError, match=rf"^token: unknown device token for device_id {a.device_id!r}$"):
        cloud.core.devices.update_preferences(PreferencesUpdate(a.device_id, "x", prefs, 3))


@pytest.mark.parametrize("change,error,message", [
    ({"profile": "x" * (MAX_PROFILE_BYTES + 1)}, LimitError, rf"profile: {MAX_PROFILE_BYTES + 1} bytes exceed the limit of {MAX_PROFILE_BYTES} bytes"),
    ({"model_id": "lenet"}, PreconditionError, r"model_id: model 'lenet' is not served here \(serving: digits_cnn\)"),
    ({"radio": "lora"}, RequestError, re.escape(f"radio: 'lora' is not one of {', '.join(known_radios())}") + "$"),
    ({"profile": "name = ["}, RequestError, re.escape(f"profile: neither a known profile ({', '.join(known_devices())}) nor profile TOML") + "$"),
    ({"profile": 'name = "x"'}, RequestError, r"profile: "),
    ({"preferences": Preferences(0.5, 0.5, N + 1)}, RequestError, rf"preferences.min_split: expected 0..{N}, got {N + 1}"),
    ({"split_device": N + 1}, RequestError, rf"split_device: expected 0..{N} for digits_cnn, got {N + 1}"),
    ({"preferences": Preferences(0.5, 0.5, 3)}, PreconditionError, r"split_device: 2 is below the device's floor \(min_split 3\)"),
    ({"encoding": 7}, RequestError, r"encoding: expected FLOAT32, FLOAT16 or INT8_AFFINE, got 7"),
    ({"position": Position(91.0, 0.0)}, RequestError, r"position.lat: expected degrees in \[-90, 90\], got 91.0"),
    ({"sensors": {"camera": 11.0}}, RequestError, r"sensors\[camera\]: expected a score in 0..10"),
    ({"device_name": "a\x00b"}, RequestError, r"device_name: control characters are not allowed"),
])
def test_a_bad_registration_is_refused_by_field_and_stores_nothing(cloud: Cloud, change: dict, error: type, message: str) -> None:
    cloud.edge(1)
    req = DeviceRegistration("d", "pi4", "wifi", Preferences(0.5, 0.5, 0), M.model_id, 2, Encoding.FLOAT32)
    with pytest.raises(error, match="^" + message):
        cloud.core.devices.register(dataclasses.replace(req, **change))
    assert cloud.core.registry.devices() == []


def test_the_floor_may_be_the_last_block(cloud: Cloud) -> None:
    cloud.edge(1)
    a = cloud.register(split=N, prefs=Preferences(0.5, 0.5, N))
    assert (a.split, a.preferences.min_split) == (Split(N, N), N)


def test_no_edge_node_means_no_registration(cloud: Cloud) -> None:
    with pytest.raises(UnavailableError, match=r"^edge_endpoint: no edge node has registered or sent a heartbeat in the last 3 s$"):
        cloud.register()


def test_the_edge_boundary_sets_where_the_edge_stops(tmp_path: Path) -> None:
    for boundary, split, want in [(None, 2, N - 1), (None, N, N), (3, 2, 3), (3, 4, 4), (N + 5, 2, N), (0, 2, 2)]:
        c = CloudCore(Registry(str(tmp_path / f"{boundary}-{split}.sqlite3")), [M], edge_boundary=boundary)
        c.edges.register(EdgeRegistration("127.0.0.1:1", 10.0))
        a = c.devices.register(DeviceRegistration("d", "pi4", "wifi", Preferences(0.5, 0.5, 0), M.model_id, split, Encoding.FLOAT32))
        assert a.split == Split(split, want), (boundary, split)


def test_an_assignment_falls_back_when_its_edge_or_encoding_is_unknown(cloud: Cloud) -> None:
    cloud.edge(1)
    a = cloud.register(encoding=Encoding.FLOAT16)
    assert cloud.core.devices.get_assignment(a.device_id, a.token).encoding == Encoding.FLOAT16
    cloud.core.registry.update_device(a.device_id, encoding="bf16", edge_id="gone")
    cloud.core.registry.remove_edge(cloud.core.registry.edges()[0].edge_id)
    got = cloud.core.devices.get_assignment(a.device_id, a.token)  # no live edge to move it to: it stays
    assert (got.encoding, got.edge_endpoint, got.edge_id, got.placement_version) == (Encoding.FLOAT32, "", "", 0)


def test_the_lease_is_written_at_most_every_quarter_lease(cloud: Cloud) -> None:
    cloud.edge(1)
    a = cloud.register()
    t0 = cloud.clock.now

    def last_seen() -> float:
        return cloud.core.registry.device_activity(1, a.device_id)[0][2]

    assert last_seen() == t0 and cloud.core.leases.live_since() == t0 - 600.0
    cloud.clock.now = t0 + 1
    cloud.core.devices.authenticate(a.device_id, a.token)  # the first call after registering writes
    assert last_seen() == t0 + 1
    cloud.clock.now = t0 + 1 + 149.5
    cloud.core.devices.authenticate(a.device_id, a.token)
    assert last_seen() == t0 + 1
    cloud.clock.now = t0 + 1 + 150
    cloud.core.devices.authenticate(a.device_id, a.token)
    assert last_seen() == t0 + 151
    with pytest.raises(AuthenticationError, match=r"^token: unknown device token for device_id ''$"):
        cloud.core.devices.authenticate("", a.token)


def test_an_edge_is_alive_up_to_its_timeout_exactly(cloud: Cloud) -> None:
    e = cloud.edge(1)
    t0 = cloud.clock.now
    cloud.clock.now = t0 + 3.0
    assert [x.edge_id for x in cloud.core.edges.alive()] == [e]
    cloud.clock.now = t0 + 3.001
    assert cloud.core.edges.alive() == []
    cloud.core.edges.heartbeat(EdgeHeartbeat(e, 1.0, 0))
    assert [x.edge_id for x in cloud.core.edges.alive()] == [e]


def test_the_least_loaded_edge_counts_devices_per_unit_of_capacity(cloud: Cloud) -> None:
    def edge(edge_id: str, capacity: float) -> EdgeRecord:
        return EdgeRecord(edge_id, "h:1", capacity, 0.0, 0, 0.0)

    least = cloud.core.assignment.least_loaded
    assert least([edge("a", 1.0), edge("b", 3.0)], {"a": 1, "b": 2}) == "b"
    assert least([edge("a", 1.0), edge("b", 3.0)], {"a": 1, "b": 4}) == "a"
    assert least([edge("b", 1.0), edge("a", 3.0)], {"b": 1, "a": 3}) == "a"  # a tie goes to the smaller id
    assert least([edge("a", 0.5), edge("b", 2.0)], {"a": 1, "b": 3}) == "b"  # 2 devices per unit against 1.5
    assert least([edge("a", 1.0), edge("b", 1.0)], {"a": 1}) == "b"  # an edge with no devices is not in the counts
    assert least([edge("b", 1.0), edge("a", 1.0)], {}) == "a"
    assert least([edge("a", 0.0), edge("b", 1.0)], {"b": 1}) == "a"


def test_sites_are_the_edges_with_a_position_at_their_activation_cost(cloud: Cloud) -> None:
    a = cloud.edge(1, A_POS, cost=2.5)
    b = cloud.edge(2, B_POS)
    cloud.edge(3)
    assert cloud.core.assignment.sites(cloud.core.registry.edges()) == sorted(
        [placement.Site(a, A_POS, 2.5), placement.Site(b, B_POS, 5.0)], key=lambda s: s.edge_id)


def test_a_joining_device_goes_to_the_nearest_active_edge_else_the_least_loaded(cloud: Cloud) -> None:
    a = cloud.edge(1, A_POS)
    b = cloud.edge(2, B_POS, capacity=30.0)
    first = cloud.register(position=NEAR_A)  # no placement yet: the least loaded (both empty: the smaller id)
    assert first.edge_id == min(a, b)
    cloud.core.placement.place()
    active = {e.edge_id for e in cloud.core.placement.current.edges if e.active}
    assert len(active) == 1  # one device: one edge is cheaper than two
    (only,) = active
    assert cloud.register(position=NEAR_B).edge_id == only  # the nearest *active* edge
    cloud.core.leader.release()  # the first cloud stops; the next one, with another default cost, leads
    cheap = CloudCore(cloud.core.registry, [M], placement_activation_cost=0.0, clock=cloud.clock)
    cheap.placement.place()
    assert cheap.devices.register(DeviceRegistration("n", "pi4", "wifi", Preferences(0.5, 0.5, 0), M.model_id, 2, Encoding.FLOAT32,
                                                    NEAR_B)).edge_id == b
    counts = cloud.core.registry.devices_per_edge()
    lone = cloud.register(position=None)  # no position: least loaded per unit of capacity
    want = min((a, 10.0), (b, 30.0), key=lambda e: (counts.get(e[0], 0) / e[1], e[0]))[0]
    assert lone.edge_id == want


def test_a_device_whose_edge_died_is_moved_to_a_live_one_when_it_asks(cloud: Cloud) -> None:
    a = cloud.edge(1, A_POS)
    d = cloud.register(position=NEAR_B)
    assert d.edge_id == a
    t0 = cloud.clock.now
    cloud.clock.now = t0 + 10  # a is dead
    assert cloud.core.devices.get_assignment(d.device_id, d.token).edge_id == a  # no live edge: it stays
    b = cloud.edge(2, B_POS)
    changes = len(cloud.changes)
    got = cloud.core.devices.get_assignment(d.device_id, d.token)
    assert (got.edge_id, got.edge_endpoint) == (b, "127.0.0.1:2") and len(cloud.changes) == changes + 1
    assert cloud.core.registry.device(d.device_id).edge_id == b and cloud.core.assignment._moved_from == {d.device_id: {a: t0 + 10}}


def test_a_device_whose_edge_died_goes_to_the_nearest_active_edge_not_the_least_loaded(cloud: Cloud) -> None:
    cloud.core.assignment.activation_cost = 0.0  # every site with a device near it stays active
    far = Position(40.90, -74.00)
    a = cloud.edge(1, A_POS)
    b = cloud.edge(2, B_POS, capacity=1000.0)  # by load alone, b takes every device
    c = cloud.edge(3, far)
    for p in (NEAR_A, NEAR_B, Position(40.901, -74.00)):
        cloud.register(position=p)
    cloud.core.placement.place()
    assert {e.edge_id for e in cloud.core.placement.current.edges if e.active} == {a, b, c}
    d = cloud.register(position=Position(40.899, -74.00))
    assert d.edge_id == c
    cloud.core.registry.set_device_edges({d.device_id: a})
    cloud.clock.now += 5
    for e in (b, c):
        cloud.core.edges.heartbeat(EdgeHeartbeat(e, 0.0, 0))
    got = cloud.core.devices.get_assignment(d.device_id, d.token)
    assert got == Assignment(d.device_id, d.token, "127.0.0.1:3", M.model_id, M.version, d.split, d.split.device, d.preferences, c, 1, [],
                             Encoding.FLOAT32)


def test_a_location_report_is_stored_and_moves_the_device_to_the_cheaper_active_edge(cloud: Cloud) -> None:
    core, clock, changes = cloud.core, cloud.clock, cloud.changes
    core.assignment.activation_cost = 0.0  # both sites stay active
    a = cloud.edge(1, A_POS, owner="cert-a")
    b = cloud.edge(2, B_POS, owner="cert-b")
    d = cloud.register(split=3, position=NEAR_A, prefs=Preferences(0.5, 0.5, 0))
    cloud.register("e", split=3, position=NEAR_B, prefs=Preferences(0.5, 0.5, 0))
    core.placement.place()
    assert core.registry.device(d.device_id).edge_id == a
    n, moved = len(changes), dict(core.assignment._moved_from)  # what placement's own moves left
    got = core.devices.report_location(LocationReport(d.device_id, d.token, NEAR_A, 1234))
    assert got.edge_id == a and len(changes) == n and core.assignment._moved_from == moved
    clock.now += 1
    got = core.devices.report_location(LocationReport(d.device_id, d.token, NEAR_B))
    assert (got.edge_id, got.edge_endpoint, got.split, got.token, got.recommended_split) == (b, "127.0.0.1:2", Split(3, N - 1), d.token, 3)
    assert len(changes) == n + 1 and core.assignment._moved_from[d.device_id] == {**moved.get(d.device_id, {}), a: clock.now}
    assert core.devices.get_assignment(d.device_id, d.token, "cert-a").edge_id == b  # a may still finish its frames
    rows = core.registry._rows(select(LOC.c.unix_ms, LOC.c.lat, LOC.c.lon).where(LOC.c.device_id == d.device_id).order_by(LOC.c.unix_ms))
    assert rows == [(1234, NEAR_A.lat, NEAR_A.lon), (int((clock.now - 1) * 1000), NEAR_A.lat, NEAR_A.lon),
                    (int(clock.now * 1000), NEAR_B.lat, NEAR_B.lon)]
    dev = core.registry.device(d.device_id)
    assert (dev.lat, dev.lon) == (NEAR_B.lat, NEAR_B.lon)
    clock.now += 10  # every edge dead: the position is stored, the device stays
    got = core.devices.report_location(LocationReport(d.device_id, d.token, NEAR_A, 99))
    assert got.edge_id == b and len(changes) == n + 1


@pytest.mark.parametrize("report,error,message", [
    (LocationReport("", "", Position(0.0, 0.0)), AuthenticationError, r"token: unknown device token for device_id ''$"),
    (LocationReport("?", "?", None), RequestError, r"position: required$"),
    (LocationReport("?", "?", Position(-91.0, 0.0)), RequestError, r"position.lat: expected degrees in \[-90, 90\], got -91.0$"),
    (LocationReport("?", "?", Position(0.0, 0.0), -1), RequestError, r"unix_ms: expected >= 0, got -1$"),
])
def test_a_bad_location_report_is_refused_by_field(cloud: Cloud, report: LocationReport, error: type, message: str) -> None:
    cloud.edge(1)
    d = cloud.register()
    if report.device_id == "?":
        report = dataclasses.replace(report, device_id=d.device_id, token=d.token)
    with pytest.raises(error, match="^" + message):
        cloud.core.devices.report_location(report)
    assert cloud.core.registry.locations() == {}
