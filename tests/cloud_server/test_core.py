"""The cloud core without gRPC: what it serves of a model and what it checks on a frame, exactly.

The integration tests reach these through the servicer and look at a status and a field name; here
each chunk, limit and refusal is checked on the core, where a mutation cannot hide behind a
transport retry or a message that another check would have produced anyway. The control plane
(registration, leases, edge ownership, placement, campaigns, heads) is checked the same way, on a
clock the test moves, with the scheduler metrics read back from their Prometheus registry.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from cloud_server import campaigns, placement
from cloud_server import core as core_module
from cloud_server import registry as registry_module
from cloud_server.core import (
    CHUNK_BYTES,
    MAX_READING,
    MOVE_GRACE_S,
    REVOKED_NOTICE_S,
    CloudCore,
    ServedModel,
    campaign_report_from_dict,
    load_models,
    parse_profile,
    placement_report_from_dict,
    placement_report_to_dict,
)
from cloud_server.heads import BUILTIN_HEAD
from cloud_server.registry import EdgeRecord, Registry, hash_token
from ecd import codec, distribution, zoo
from ecd.batching import BatchingConfig, DynamicBatcher
from ecd.config import MiB
from ecd.errors import (
    AuthenticationError,
    LimitError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    RequestError,
    UnavailableError,
)
from ecd.limits import (
    MAX_ENDPOINT_CHARS,
    MAX_HEAD_LABELS,
    MAX_HEADS_PER_MODEL,
    MAX_PROFILE_BYTES,
    MIN_CHUNK_BYTES,
)
from ecd.manifest import MANIFEST_FILENAME, load_heldout
from ecd.metrics import SchedulerMetrics
from ecd.partition import BlockRunner, Partition
from ecd.profiles import (
    device_to_toml,
    known_devices,
    known_radios,
    load_device,
    load_radio,
)
from ecd.split import Preferences, decide_split
from ecd.scheduler_types import (
    CampaignReport,
    CampaignSpec,
    DevicePlacement,
    DeviceQuality,
    DeviceTasks,
    EdgePlacement,
    Grid,
    PlacementReport,
    SiteRequest,
)
from ecd.types import (
    Assignment,
    DeviceRegistration,
    EdgeHeartbeat,
    EdgeRegistration,
    Encoding,
    Frame,
    HeadSpec,
    LocationReport,
    PartitionRequest,
    Position,
    PreferencesUpdate,
    Split,
    Task,
)

M = zoo.load_manifest("digits_cnn")


@pytest.fixture
def core(tmp_path: Path) -> CloudCore:
    c = CloudCore(Registry(tmp_path / "r.sqlite3"), [M])
    c.register_edge(EdgeRegistration("127.0.0.1:1", 10.0))
    return c


def register(core: CloudCore, split: int = 2, min_split: int = 0):
    return core.register_device(DeviceRegistration("d", "pi4", "wifi", Preferences(1.0, 1.0, min_split), M.model_id, split, Encoding.FLOAT32))


# --- partitions --------------------------------------------------------------------------------


def test_a_head_request_gets_the_manifest_only(core: CloudCore) -> None:
    chunks = list(core.partition_chunks(PartitionRequest(M.model_id, M.version, 0, 0)))
    data = (M.directory / MANIFEST_FILENAME).read_bytes()
    assert [c.file for c in chunks] == [MANIFEST_FILENAME] and chunks[0].data == data
    assert (chunks[0].size, chunks[0].offset) == (len(data), 0)


def test_blocks_come_in_chunks_of_the_callers_size(core: CloudCore, tmp_path: Path) -> None:
    chunks = list(core.partition_chunks(PartitionRequest(M.model_id, "", 1, 3, 5000)))
    names = [b.file for b in M.blocks[1:3]]
    assert sorted({c.file for c in chunks}) == sorted([MANIFEST_FILENAME, *names])
    assert all(len(c.data) <= 5000 for c in chunks)
    for name in names:
        mine = [c for c in chunks if c.file == name]
        data = (M.directory / name).read_bytes()
        assert [c.offset for c in mine] == list(range(0, len(data), 5000))
        assert b"".join(c.data for c in mine) == data and all(c.size == len(data) for c in mine)
    got = distribution.fetch(chunks, tmp_path / "copy")  # the chunks assemble and verify
    assert got.version == M.version


def test_the_chunk_size_defaults_to_and_is_capped_at_one_mib(core: CloudCore) -> None:
    big = max(M.blocks, key=lambda b: (M.directory / b.file).stat().st_size)
    i = M.blocks.index(big)
    size = (M.directory / big.file).stat().st_size
    for asked in (0, CHUNK_BYTES * 4):
        chunks = [c for c in core.partition_chunks(PartitionRequest(M.model_id, "", i, i + 1, asked)) if c.file == big.file]
        assert max(len(c.data) for c in chunks) == min(size, CHUNK_BYTES)
        assert len(chunks) == -(-size // CHUNK_BYTES)


@pytest.mark.parametrize("start,stop", [(3, 2), (0, M.n_blocks + 1), (M.n_blocks + 1, M.n_blocks + 1)])
def test_a_bad_block_range_is_refused(core: CloudCore, start: int, stop: int) -> None:
    with pytest.raises(RequestError, match=rf"^start, stop: expected 0 <= start <= stop <= {M.n_blocks}, got \[{start}, {stop}\)$"):
        list(core.partition_chunks(PartitionRequest(M.model_id, "", start, stop)))


def test_the_whole_model_and_only_its_version(core: CloudCore) -> None:
    chunks = list(core.partition_chunks(PartitionRequest(M.model_id, M.version, 0, M.n_blocks)))
    assert {c.file for c in chunks} == {MANIFEST_FILENAME, *(b.file for b in M.blocks)}
    with pytest.raises(PreconditionError, match=r"^model_version: digits_cnn version '0+' is not served here"):
        list(core.partition_chunks(PartitionRequest(M.model_id, "0" * 16, 0, 0)))
    with pytest.raises(PreconditionError, match=r"^model_id: model 'lenet' is not served here \(serving: digits_cnn\)$"):
        list(core.partition_chunks(PartitionRequest("lenet", "", 0, 0)))


# --- the data plane -----------------------------------------------------------------------------


def frame(a, split: Split, x: np.ndarray | None = None, frame_id: int = 1) -> Frame:
    x = M.input.preprocess(load_heldout(M).images[:1]) if x is None else x
    act = Partition(M, 0, split.edge).run(x)
    return Frame(a.device_id, frame_id, a.token, a.model_id, a.model_version, split, codec.encode(act),
                 device_compute_s=0.25, edge_compute_s=0.5, uplink_bytes=123, wire_bytes=77)


def test_a_good_frame_gets_every_head_and_its_timings(core: CloudCore) -> None:
    a = register(core)
    x = M.input.preprocess(load_heldout(M).images[:1])
    r = core.process(frame(a, Split(2, 4), x))
    assert r.ok and r.error is None
    want = Partition(M, 0, M.n_blocks).run(x)[0]
    assert np.allclose(r.output, want, atol=1e-4)
    head = r.head("class")
    assert head.index == int(np.argmax(want)) and head.label == M.labels[head.index] and len(head.scores) == len(M.labels)
    assert (r.device_id, r.frame_id, r.split) == (a.device_id, 1, Split(2, 4))
    assert (r.device_compute_s, r.edge_compute_s, r.uplink_bytes, r.edge_to_cloud_bytes) == (0.25, 0.5, 123, 77)
    assert r.cloud_compute_s > 0


@pytest.mark.parametrize("split,field", [(Split(2, 1), "split_edge"), (Split(2, M.n_blocks + 1), "split_edge")])
def test_a_split_edge_out_of_range_is_refused(core: CloudCore, split: Split, field: str) -> None:
    a = register(core)
    f = frame(a, Split(2, 2))
    f.split = split
    r = core.process(f)
    assert not r.ok and r.error.status == "INVALID_ARGUMENT"
    assert r.error.message == f"split_edge: expected 2..{M.n_blocks}, got {split.edge}"
    assert r.heads == []


def test_the_split_edge_may_be_the_last_block(core: CloudCore) -> None:
    a = register(core)
    r = core.process(frame(a, Split(2, M.n_blocks)))
    assert r.ok and r.head("class") is not None


def test_the_floor_and_the_token_are_checked_again(core: CloudCore) -> None:
    a = register(core, split=3, min_split=3)
    low = frame(a, Split(1, 4))
    r = core.process(low)
    assert r.error.status == "FAILED_PRECONDITION" and "min_split" in r.error.message
    f = frame(a, Split(3, 4))
    f.token = "x"
    r = core.process(f)
    assert r.error.status == "UNAUTHENTICATED" and r.error.message == f"token: unknown device token for device_id {a.device_id!r}"
    f.token = ""
    assert core.process(f).error.status == "UNAUTHENTICATED"
    f.token, f.device_id = a.token, ""
    assert core.process(f).error.status == "UNAUTHENTICATED"


# --- the control plane, on a clock the test moves ------------------------------------------------
#
# The core and its registry read ``time`` (time, monotonic, perf_counter); here both read one clock
# the test sets, so leases, timeouts, grace periods and the scheduler timings are checked at their
# exact boundaries instead of being slept through.

N = M.n_blocks
A_POS, B_POS = Position(40.70, -74.00), Position(40.80, -74.00)  # two edge sites ~11 km apart
NEAR_A, NEAR_B = Position(40.701, -74.00), Position(40.799, -74.00)


class Clock:
    """Stands in for the ``time`` module of the core and the registry."""

    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def time(self) -> float:
        return self.now

    monotonic = perf_counter = time


@dataclasses.dataclass
class Cloud:
    core: CloudCore
    clock: Clock
    prom: CollectorRegistry
    changes: list[int]

    def runs(self, scheduler: str, method: str, outcome: str) -> float | None:
        return self.prom.get_sample_value("ecd_scheduler_runs_total", {"scheduler": scheduler, "method": method, "outcome": outcome})

    def seconds(self, scheduler: str) -> float | None:
        return self.prom.get_sample_value("ecd_scheduler_seconds_sum", {"scheduler": scheduler})

    def register(self, name: str = "d", split: int = 2, position: Position | None = None, profile: str = "pi4",
                 prefs: Preferences = Preferences(0.6, 0.4, 0), encoding: Encoding = Encoding.FLOAT32, sensors=None):
        return self.core.register_device(DeviceRegistration(name, profile, "wifi", prefs, M.model_id, split, encoding, position,
                                                            sensors or {}))

    def edge(self, port: int, position: Position | None = None, owner: str = "", cost: float = 0.0, capacity: float = 10.0) -> str:
        return self.core.register_edge(EdgeRegistration(f"127.0.0.1:{port}", capacity, position, cost), owner)


@pytest.fixture
def cloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cloud:
    clock = Clock()
    monkeypatch.setattr(core_module, "time", clock)
    monkeypatch.setattr(registry_module, "time", clock)
    changes: list[int] = []
    c = CloudCore(Registry(str(tmp_path / "r.sqlite3")), [M], on_change=lambda: changes.append(1))
    prom = CollectorRegistry()
    c.metrics = SchedulerMetrics(prom)
    return Cloud(c, clock, prom, changes)


def test_a_new_core_serves_its_models_with_the_documented_defaults(tmp_path: Path) -> None:
    c = CloudCore(Registry(str(tmp_path / "r.sqlite3")), [M])
    assert (c.edge_boundary, c.max_tensor_bytes, c.edge_timeout_s, c.max_batch, c.device_lease_s) == (None, 16 * MiB, 3.0, codec.MAX_BATCH, 600.0)
    assert (c.placement_method, c.placement_activation_cost) == (placement.DEFAULT_METHOD, 5.0)
    assert c.placement is None and c._placed_alive == set() and c.metrics is None and c._touched == {} and c._moved_from == {}
    assert c.campaign_limits == campaigns.Limits()
    assert c.on_change() is None  # the default watcher does nothing
    served = c.models[M.model_id]
    assert served.manifest is M and list(served.heads) == [BUILTIN_HEAD] and served.heads[BUILTIN_HEAD].labels == tuple(M.labels)
    assert served.batcher is not None and served.batcher.config == BatchingConfig()
    custom = CloudCore(Registry(str(tmp_path / "s.sqlite3")), [M], batching=BatchingConfig(4, 0.01), placement_activation_cost=0.0,
                       placement_method="otacs")
    assert custom.models[M.model_id].batcher.config == BatchingConfig(4, 0.01) and custom.placement_activation_cost == 0.0
    assert custom.placement_method == "otacs"


@pytest.mark.parametrize("cost", [-1.0, float("nan"), float("inf")])
def test_a_bad_activation_cost_is_refused_by_name(tmp_path: Path, cost: float) -> None:
    with pytest.raises(RequestError, match=rf"^placement_activation_cost: expected a finite value >= 0, got {cost}$"):
        CloudCore(Registry(str(tmp_path / "r.sqlite3")), [M], placement_activation_cost=cost)


def test_a_restarted_core_keeps_its_heads_and_its_placement(cloud: Cloud, tmp_path: Path) -> None:
    a, b = cloud.edge(1, A_POS), cloud.edge(2, B_POS)
    cloud.register(position=NEAR_A)
    spec = HeadSpec(M.model_id, "odd", ["even", "odd"], [float(k % 2 == j) for j in range(2) for k in range(10)], [0.5, -0.5], "probabilities")
    cloud.core.add_head(spec)
    report = cloud.core.place()
    again = CloudCore(cloud.core.registry, [M])
    assert again.list_heads(M.model_id) == cloud.core.list_heads(M.model_id)
    assert again.placement == report and again._placed_alive == {a, b}


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
    assert cloud.core.registry._rows("SELECT unix_ms FROM locations") == [(int(cloud.clock.now * 1000),)]
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
    b = cloud.core.update_preferences(PreferencesUpdate(a.device_id, a.token, Preferences(0.1, 0.9, 1), 4))
    assert b.recommended_split == 4 and b.split == Split(4, N - 1) and b.token == a.token


def test_preferences_update_stores_them_and_recommends_with_the_profile(cloud: Cloud) -> None:
    cloud.edge(1)
    a = cloud.register(split=2)
    prefs = Preferences(0.9, 0.1, 0)  # energy first: the utility would offload everything
    b = cloud.core.update_preferences(PreferencesUpdate(a.device_id, a.token, prefs, N))
    assert b.recommended_split == decide_split(M, load_device("pi4"), load_radio("wifi"), prefs).recommended != N
    assert (b.split, b.preferences, b.token, b.device_id) == (Split(N, N), prefs, a.token, a.device_id)
    d = cloud.core.registry.device(a.device_id)
    assert (d.w_energy, d.w_privacy, d.min_split, d.split_device, d.split_edge) == (0.9, 0.1, 0, N, N)
    prefs = Preferences(0.2, 0.8, 2)
    with pytest.raises(PreconditionError, match=r"^split_device: 1 is below the device's floor \(min_split 2\)$"):
        cloud.core.update_preferences(PreferencesUpdate(a.device_id, a.token, prefs, 1))
    with pytest.raises(AuthenticationError, match=rf"^token: unknown device token for device_id {a.device_id!r}$"):
        cloud.core.update_preferences(PreferencesUpdate(a.device_id, "x", prefs, 3))


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
        cloud.core.register_device(dataclasses.replace(req, **change))
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
        c.register_edge(EdgeRegistration("127.0.0.1:1", 10.0))
        a = c.register_device(DeviceRegistration("d", "pi4", "wifi", Preferences(0.5, 0.5, 0), M.model_id, split, Encoding.FLOAT32))
        assert a.split == Split(split, want), (boundary, split)


def test_an_assignment_falls_back_when_its_edge_or_encoding_is_unknown(cloud: Cloud) -> None:
    cloud.edge(1)
    a = cloud.register(encoding=Encoding.FLOAT16)
    assert cloud.core.get_assignment(a.device_id, a.token).encoding == Encoding.FLOAT16
    cloud.core.registry.update_device(a.device_id, encoding="bf16", edge_id="gone")
    cloud.core.registry.remove_edge(cloud.core.registry.edges()[0].edge_id)
    got = cloud.core.get_assignment(a.device_id, a.token)  # no live edge to move it to: it stays
    assert (got.encoding, got.edge_endpoint, got.edge_id, got.placement_version) == (Encoding.FLOAT32, "", "", 0)


def test_the_lease_is_written_at_most_every_quarter_lease(cloud: Cloud) -> None:
    cloud.edge(1)
    a = cloud.register()
    t0 = cloud.clock.now

    def last_seen() -> float:
        return cloud.core.registry.device_activity(1, a.device_id)[0][2]

    assert last_seen() == t0 and cloud.core.live_since() == t0 - 600.0
    cloud.clock.now = t0 + 1
    cloud.core.authenticate(a.device_id, a.token)  # the first call after registering writes
    assert last_seen() == t0 + 1
    cloud.clock.now = t0 + 1 + 149.5
    cloud.core.authenticate(a.device_id, a.token)
    assert last_seen() == t0 + 1
    cloud.clock.now = t0 + 1 + 150
    cloud.core.authenticate(a.device_id, a.token)
    assert last_seen() == t0 + 151
    with pytest.raises(AuthenticationError, match=r"^token: unknown device token for device_id ''$"):
        cloud.core.authenticate("", a.token)


def test_an_edge_is_alive_up_to_its_timeout_exactly(cloud: Cloud) -> None:
    e = cloud.edge(1)
    t0 = cloud.clock.now
    cloud.clock.now = t0 + 3.0
    assert [x.edge_id for x in cloud.core.alive_edges()] == [e]
    cloud.clock.now = t0 + 3.001
    assert cloud.core.alive_edges() == []
    cloud.core.heartbeat(EdgeHeartbeat(e, 1.0, 0))
    assert [x.edge_id for x in cloud.core.alive_edges()] == [e]


def test_the_least_loaded_edge_counts_devices_per_unit_of_capacity(cloud: Cloud) -> None:
    def edge(edge_id: str, capacity: float) -> EdgeRecord:
        return EdgeRecord(edge_id, "h:1", capacity, 0.0, 0, 0.0)

    least = cloud.core._least_loaded
    assert least([edge("a", 1.0), edge("b", 3.0)], {"a": 1, "b": 2}) == "b"
    assert least([edge("a", 1.0), edge("b", 3.0)], {"a": 1, "b": 4}) == "a"
    assert least([edge("b", 1.0), edge("a", 3.0)], {"b": 1, "a": 3}) == "a"  # a tie goes to the smaller id
    assert least([edge("b", 1.0), edge("a", 1.0)], {}) == "a"
    assert least([edge("a", 0.0), edge("b", 1.0)], {"b": 1}) == "a"


def test_sites_are_the_edges_with_a_position_at_their_activation_cost(cloud: Cloud) -> None:
    a = cloud.edge(1, A_POS, cost=2.5)
    b = cloud.edge(2, B_POS)
    cloud.edge(3)
    assert cloud.core._sites(cloud.core.registry.edges()) == sorted(
        [placement.Site(a, A_POS, 2.5), placement.Site(b, B_POS, 5.0)], key=lambda s: s.edge_id)


def test_a_joining_device_goes_to_the_nearest_active_edge_else_the_least_loaded(cloud: Cloud) -> None:
    a = cloud.edge(1, A_POS)
    b = cloud.edge(2, B_POS, capacity=30.0)
    first = cloud.register(position=NEAR_A)  # no placement yet: the least loaded (both empty: the smaller id)
    assert first.edge_id == min(a, b)
    cloud.core.place()
    active = {e.edge_id for e in cloud.core.placement.edges if e.active}
    assert len(active) == 1  # one device: one edge is cheaper than two
    (only,) = active
    assert cloud.register(position=NEAR_B).edge_id == only  # the nearest *active* edge
    cheap = CloudCore(cloud.core.registry, [M], placement_activation_cost=0.0)
    cheap.place()
    assert cheap.register_device(DeviceRegistration("n", "pi4", "wifi", Preferences(0.5, 0.5, 0), M.model_id, 2, Encoding.FLOAT32,
                                                    NEAR_B)).edge_id == b
    counts = cloud.core.registry.devices_per_edge()
    lone = cloud.register(position=None)  # no position: least loaded per unit of capacity
    want = min((a, 10.0), (b, 30.0), key=lambda e: (counts.get(e[0], 0) / e[1], e[0]))[0]
    assert lone.edge_id == want


def test_an_edge_registers_once_per_endpoint_and_owner(cloud: Cloud) -> None:
    e = cloud.edge(1, A_POS, owner="cert-a", cost=1.5, capacity=7.0)
    assert cloud.edge(1, B_POS, owner="cert-a") == e  # re-registering keeps the id
    rec = cloud.core.registry.edge(e)
    assert (rec.endpoint, rec.capacity, rec.lat, rec.lon, rec.activation_cost, rec.owner) == ("127.0.0.1:1", 10.0, B_POS.lat, B_POS.lon, 0.0, "cert-a")
    with pytest.raises(PermissionDeniedError, match=r"^endpoint: 127.0.0.1:1 is registered by another edge node$"):
        cloud.edge(1, owner="cert-b")
    assert cloud.core.register_edge(EdgeRegistration("127.0.0.1:2", 1.0)) != e  # default owner: ""
    assert cloud.core.registry.edge(cloud.edge(3, cost=0.0)).activation_cost == 0.0


@pytest.mark.parametrize("req,message", [
    (EdgeRegistration("localhost", 1.0), r"endpoint: expected host:port, got 'localhost'"),
    (EdgeRegistration("", 1.0), r"endpoint: must not be empty"),
    (EdgeRegistration("h:" + "1" * MAX_ENDPOINT_CHARS, 1.0), rf"endpoint: at most {MAX_ENDPOINT_CHARS} characters, got {MAX_ENDPOINT_CHARS + 2}"),
    (EdgeRegistration("h:1", 0.0), r"capacity: expected a finite value > 0, got 0.0"),
    (EdgeRegistration("h:1", float("inf")), r"capacity: expected a finite value > 0, got inf"),
    (EdgeRegistration("h:1", float("nan")), r"capacity: expected a finite value > 0, got nan"),
    (EdgeRegistration("h:1", 1.0, None, -0.5), r"activation_cost: expected a finite value >= 0, got -0.5"),
    (EdgeRegistration("h:1", 1.0, None, float("inf")), r"activation_cost: expected a finite value >= 0, got inf"),
    (EdgeRegistration("h:1", 1.0, Position(0.0, 181.0)), r"position.lon: expected degrees in \[-180, 180\], got 181.0"),
])
def test_a_bad_edge_registration_is_refused_by_field(cloud: Cloud, req: EdgeRegistration, message: str) -> None:
    with pytest.raises(RequestError, match="^" + message + "$"):
        cloud.core.register_edge(req)
    assert cloud.core.registry.edges() == []


def test_edge_calls_are_taken_from_their_owner_only(cloud: Cloud) -> None:
    e = cloud.edge(1, owner="cert-a")
    with pytest.raises(NotFoundError, match=r"^edge_id: 'nope' is not registered$"):
        cloud.core.heartbeat(EdgeHeartbeat("nope", 1.0, 0), "cert-a")
    with pytest.raises(NotFoundError, match=r"^edge_id: 'nope' is not registered$"):
        cloud.core.deregister_edge("nope", "cert-a")
    with pytest.raises(PermissionDeniedError, match=rf"^edge_id: {e} belongs to another edge node$"):
        cloud.core.heartbeat(EdgeHeartbeat(e, 1.0, 0), "cert-b")
    with pytest.raises(PermissionDeniedError, match=rf"^edge_id: {e} belongs to another edge node$"):
        cloud.core.deregister_edge(e)
    assert cloud.core.heartbeat(EdgeHeartbeat(e, 2.5, 3), "cert-a") == []
    rec = cloud.core.registry.edge(e)
    assert (rec.load, rec.queue_depth) == (2.5, 3)
    free = cloud.edge(2)
    assert cloud.core.heartbeat(EdgeHeartbeat(free, 0.0, 0)) == []  # an edge without a certificate: owner ""
    cloud.core.deregister_edge(free)
    assert [x.edge_id for x in cloud.core.alive_edges()] == [e]


def test_an_edge_removed_between_the_checks_is_named(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    """A concurrent deregistration (simulated: the registry answers that nothing was removed)."""
    e = cloud.edge(1)
    monkeypatch.setattr(cloud.core.registry, "remove_edge", lambda edge_id: False)
    monkeypatch.setattr(cloud.core.registry, "heartbeat", lambda *a: False)
    with pytest.raises(NotFoundError, match=rf"^edge_id: {e!r} is not registered$"):
        cloud.core.deregister_edge(e)
    with pytest.raises(NotFoundError, match=rf"^edge_id: {e!r} is not registered$"):
        cloud.core.heartbeat(EdgeHeartbeat(e, 0.0, 0))


def test_heartbeats_name_the_devices_revoked_in_the_last_minute(cloud: Cloud) -> None:
    e = cloud.edge(1)
    a, b = cloud.register("a"), cloud.register("b")
    t0 = cloud.clock.now
    cloud.core.revoke_device(b.device_id)
    cloud.clock.now = t0 + 10
    cloud.core.revoke_device(a.device_id)
    with pytest.raises(AuthenticationError):
        cloud.core.authenticate(a.device_id, a.token)
    cloud.clock.now = t0 + REVOKED_NOTICE_S - 0.5
    assert cloud.core.heartbeat(EdgeHeartbeat(e, 0.0, 0)) == sorted([a.device_id, b.device_id])
    cloud.clock.now = t0 + REVOKED_NOTICE_S + 0.5
    assert cloud.core.heartbeat(EdgeHeartbeat(e, 0.0, 0)) == [a.device_id]
    with pytest.raises(NotFoundError, match=r"^device_id: 'zz\\\\x00' is not registered$"):
        cloud.core.revoke_device("zz\x00")


def test_an_edge_may_serve_a_device_it_lost_for_the_grace_period_only(cloud: Cloud) -> None:
    a = cloud.edge(1, owner="cert-a")
    b = cloud.edge(2, owner="cert-b")
    d = cloud.register()
    home, other = (a, "cert-a"), (b, "cert-b")
    if d.edge_id == b:
        home, other = other, home
    assert cloud.core.get_assignment(d.device_id, d.token, home[1]).edge_id == home[0]
    with pytest.raises(PermissionDeniedError, match=rf"^device_id: device {d.device_id} is not assigned to this edge node$"):
        cloud.core.get_assignment(d.device_id, d.token, other[1])
    t0 = cloud.clock.now
    cloud.core._move({d.device_id: other[0]}, {d.device_id: home[0]})
    assert cloud.core._moved_from == {d.device_id: {home[0]: t0}}
    cloud.clock.now = t0 + MOVE_GRACE_S - 0.01
    cloud.core.heartbeat(EdgeHeartbeat(a, 0.0, 0), "cert-a")
    cloud.core.heartbeat(EdgeHeartbeat(b, 0.0, 0), "cert-b")
    for owner in ("cert-a", "cert-b"):
        assert cloud.core.get_assignment(d.device_id, d.token, owner).edge_id == other[0]
    cloud.clock.now = t0 + MOVE_GRACE_S
    cloud.core.heartbeat(EdgeHeartbeat(a, 0.0, 0), "cert-a")
    cloud.core.heartbeat(EdgeHeartbeat(b, 0.0, 0), "cert-b")
    with pytest.raises(PermissionDeniedError):
        cloud.core.get_assignment(d.device_id, d.token, home[1])
    cloud.core._move({d.device_id: other[0]}, {d.device_id: other[0]})  # not a move: nothing remembered
    assert cloud.core._moved_from == {d.device_id: {home[0]: t0}}


def test_a_device_whose_edge_died_is_moved_to_a_live_one_when_it_asks(cloud: Cloud) -> None:
    a = cloud.edge(1, A_POS)
    d = cloud.register(position=NEAR_B)
    assert d.edge_id == a
    t0 = cloud.clock.now
    cloud.clock.now = t0 + 10  # a is dead
    assert cloud.core.get_assignment(d.device_id, d.token).edge_id == a  # no live edge: it stays
    b = cloud.edge(2, B_POS)
    changes = len(cloud.changes)
    got = cloud.core.get_assignment(d.device_id, d.token)
    assert (got.edge_id, got.edge_endpoint) == (b, "127.0.0.1:2") and len(cloud.changes) == changes + 1
    assert cloud.core.registry.device(d.device_id).edge_id == b and cloud.core._moved_from == {d.device_id: {a: t0 + 10}}


def test_a_device_whose_edge_died_goes_to_the_nearest_active_edge_not_the_least_loaded(cloud: Cloud) -> None:
    cloud.core.placement_activation_cost = 0.0  # every site with a device near it stays active
    far = Position(40.90, -74.00)
    a = cloud.edge(1, A_POS)
    b = cloud.edge(2, B_POS, capacity=1000.0)  # by load alone, b takes every device
    c = cloud.edge(3, far)
    for p in (NEAR_A, NEAR_B, Position(40.901, -74.00)):
        cloud.register(position=p)
    cloud.core.place()
    assert {e.edge_id for e in cloud.core.placement.edges if e.active} == {a, b, c}
    d = cloud.register(position=Position(40.899, -74.00))
    assert d.edge_id == c
    cloud.core.registry.set_device_edges({d.device_id: a})
    cloud.clock.now += 5
    for e in (b, c):
        cloud.core.heartbeat(EdgeHeartbeat(e, 0.0, 0))
    got = cloud.core.get_assignment(d.device_id, d.token)
    assert got == Assignment(d.device_id, d.token, "127.0.0.1:3", M.model_id, M.version, d.split, d.split.device, d.preferences, c, 1, [],
                             Encoding.FLOAT32)


def test_a_location_report_is_stored_and_moves_the_device_to_the_cheaper_active_edge(cloud: Cloud) -> None:
    core, clock, changes = cloud.core, cloud.clock, cloud.changes
    core.placement_activation_cost = 0.0  # both sites stay active
    a = cloud.edge(1, A_POS, owner="cert-a")
    b = cloud.edge(2, B_POS, owner="cert-b")
    d = cloud.register(split=3, position=NEAR_A, prefs=Preferences(0.5, 0.5, 0))
    cloud.register("e", split=3, position=NEAR_B, prefs=Preferences(0.5, 0.5, 0))
    core.place()
    assert core.registry.device(d.device_id).edge_id == a
    n, moved = len(changes), dict(core._moved_from)  # what placement's own moves left
    got = core.report_location(LocationReport(d.device_id, d.token, NEAR_A, 1234))
    assert got.edge_id == a and len(changes) == n and core._moved_from == moved
    clock.now += 1
    got = core.report_location(LocationReport(d.device_id, d.token, NEAR_B))
    assert (got.edge_id, got.edge_endpoint, got.split, got.token, got.recommended_split) == (b, "127.0.0.1:2", Split(3, N - 1), d.token, 3)
    assert len(changes) == n + 1 and core._moved_from[d.device_id] == {**moved.get(d.device_id, {}), a: clock.now}
    assert core.get_assignment(d.device_id, d.token, "cert-a").edge_id == b  # a may still finish its frames
    rows = core.registry._rows("SELECT unix_ms, lat, lon FROM locations WHERE device_id = ? ORDER BY unix_ms", (d.device_id,))
    assert rows == [(1234, NEAR_A.lat, NEAR_A.lon), (int((clock.now - 1) * 1000), NEAR_A.lat, NEAR_A.lon),
                    (int(clock.now * 1000), NEAR_B.lat, NEAR_B.lon)]
    dev = core.registry.device(d.device_id)
    assert (dev.lat, dev.lon) == (NEAR_B.lat, NEAR_B.lon)
    clock.now += 10  # every edge dead: the position is stored, the device stays
    got = core.report_location(LocationReport(d.device_id, d.token, NEAR_A, 99))
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
        cloud.core.report_location(report)
    assert cloud.core.registry.locations() == {}


# --- placement ---------------------------------------------------------------------------------


def test_placement_applies_the_solvers_choice_and_reports_it(cloud: Cloud) -> None:
    a, b = cloud.edge(1, A_POS, cost=0.5), cloud.edge(2, B_POS)
    dead = cloud.edge(3, Position(40.75, -74.0))
    blind = cloud.edge(4)  # no position: not a site, but alive
    cloud.clock.now += 2.5
    for e in (a, b, blind):
        cloud.core.heartbeat(EdgeHeartbeat(e, 0.0, 0))
    cloud.clock.now += 1.0  # dead's heartbeat is 3.5 s old
    devices = [cloud.register(f"d{k}", position=p) for k, p in enumerate([NEAR_A, NEAR_A, NEAR_B, NEAR_B])]
    lost = cloud.register("lost")  # no position
    assert cloud.core.placement_due() == "edge joined"
    n = len(cloud.changes)
    report = cloud.core.place(seed=1, trigger="test")
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
    assert cloud.core.placement is report and cloud.core._placed_alive == {a, b, blind}
    assert placement_report_from_dict(cloud.core.registry.latest_placement()) == report
    assert len(cloud.changes) == n + 1 and cloud.core.placement_due() is None
    assert cloud.runs("placement", placement.DEFAULT_METHOD, "ok") == 1.0 and cloud.seconds("placement") == 0.0
    assert cloud.prom.get_sample_value("ecd_placement_cost", {"part": "total"}) == report.total_cost
    assert cloud.prom.get_sample_value("ecd_placement_active_edges") == len(active)
    assert cloud.core.get_assignment(lost.device_id, lost.token).placement_version == 1
    again = cloud.core.place("otacs")
    assert (again.version, again.method, again.trigger) == (2, "otacs", "operator")
    assert cloud.runs("placement", "otacs", "ok") == 1.0


def test_placement_hands_the_solver_its_method_and_seed(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, int]] = []
    solve = placement.place

    def recording(sites, users, method, seed):  # the real solver, its arguments recorded
        asked.append((method, seed))
        return solve(sites, users, method, seed)

    monkeypatch.setattr(core_module.placement, "place", recording)
    cloud.edge(1, A_POS)
    cloud.register(position=NEAR_A)
    cloud.core.place()
    cloud.core.place("otacs", seed=7)
    assert asked == [(placement.DEFAULT_METHOD, 0), ("otacs", 7)]


def test_placement_without_positions_spreads_devices_by_load(cloud: Cloud) -> None:
    a, b = cloud.edge(1), cloud.edge(2, capacity=20.0)
    ds = [cloud.register(f"d{k}") for k in range(3)]
    report = cloud.core.place()
    assert (report.method, report.total_cost, report.activation_cost, report.service_cost, report.seconds, report.instance_json) == (
        "least loaded (no positions)", 0.0, 0.0, 0.0, 0.0, "")
    got = {d.device_id: d.edge_id for d in report.devices}
    assert sorted(got.values()) == sorted([a, b, b]) and set(got) == {d.device_id for d in ds}
    by_edge = {e.edge_id: e for e in report.edges}
    assert (by_edge[a].active, by_edge[a].devices, by_edge[b].active, by_edge[b].devices) == (True, 1, True, 2)
    assert all(d.service_cost == 0.0 and d.position is None for d in report.devices)


def test_placement_with_no_live_edge_is_refused_and_counted(cloud: Cloud) -> None:
    with pytest.raises(PreconditionError, match=r"^placement: none computed yet \(no edge node has registered\)$"):
        cloud.core.placement_report()
    assert cloud.core.placement_due() is None
    cloud.edge(1)
    cloud.clock.now += 5
    assert cloud.core.placement_due() is None
    with pytest.raises(PreconditionError, match=r"^edges: no edge node is alive \(registered, with a heartbeat in the last 3 s\) "
                                                r"to place devices on$"):
        cloud.core.place("otacs")
    assert cloud.runs("placement", "otacs", "error") == 1.0 and cloud.seconds("placement") == 0.0
    assert cloud.runs("placement", "otacs", "ok") is None and cloud.changes == []
    with pytest.raises(RequestError, match=r"^method"):
        cloud.core.place("random_walk")


def test_placement_is_due_when_an_edge_joins_or_is_lost(cloud: Cloud) -> None:
    a = cloud.edge(1)
    assert cloud.core.placement_due() == "edge joined"
    cloud.core.place()
    assert cloud.core.placement_due() is None
    b = cloud.edge(2)
    assert cloud.core.placement_due() == "edge joined"
    cloud.core.place()
    cloud.core.deregister_edge(b)
    assert cloud.core.placement_due() == "edge lost"
    cloud.core.place()
    assert cloud.core.placement_due() is None and cloud.core._placed_alive == {a}


# --- campaigns, reputations, site selection -----------------------------------------------------

GRID = Grid(Position(40.70, -74.02), Position(40.72, -73.98), rows=1, cols=2)
WEST, EAST = Position(40.71, -74.01), Position(40.71, -73.99)


def campaign_spec(**kw) -> CampaignSpec:
    return CampaignSpec(**{"name": "heat", "grid": GRID, "slots": 2, "reporters": [1], "method": "tapp", "theta": 5.0, **kw})


def walkers(cloud: Cloud, n: int = 3) -> list[Assignment]:
    """Devices whose traces cross both cells of the grid."""
    cloud.edge(1)
    out = []
    for k in range(n):
        a = cloud.register(f"w{k}", split=2, position=WEST if k % 2 else EAST)
        for p in (WEST, EAST, WEST)[: 2 + k % 2]:
            cloud.clock.now += 0.001
            cloud.core.report_location(LocationReport(a.device_id, a.token, p))
        out.append(a)
    return out


def test_a_campaign_stores_the_allocators_choice_and_hands_out_its_tasks(cloud: Cloud) -> None:
    ws = walkers(cloud)
    cloud.core.registry.set_reputations({ws[0].device_id: 2.5})
    n = len(cloud.changes)
    report = cloud.core.create_campaign(campaign_spec())
    devices = {d.device_id: d for d in cloud.core.registry.devices()}
    want = campaigns.allocate(campaign_spec(), cloud.core.registry.locations(), {k: d.reputation for k, d in devices.items()},
                              campaigns.DEFAULT_REPUTATION_FLOOR)
    assert len(report.campaign_id) == 12 and int(report.campaign_id, 16) >= 0
    assert (report.status, report.requested_work, report.allocated_work, report.participants, report.dangerous, report.utility) == (
        "running", want.requested, want.allocated, len(want.participants), len(want.dangerous), want.utility)
    assert report.seconds == pytest.approx(want.seconds, abs=1.0) and report.seconds > 0 and report.excluded == want.excluded
    by_device: dict[str, list[Task]] = {}
    for task_id, device_id, cell, slot in want.tasks:
        by_device.setdefault(device_id, []).append(Task(report.campaign_id, task_id, cell, slot))
    assert report.chosen == len(by_device)
    assert [(a.device_id, a.device_name, a.tasks, a.disclosure, a.dangerous) for a in report.allocation] == [
        (d, devices[d].name, t, want.disclosure.get(d, 0.0), d in want.dangerous) for d, t in sorted(by_device.items())]
    assert (report.coverage, report.cells, report.objective, report.latency_s) == (0, 0, 0.0, 0.0)
    assert campaign_report_from_dict(cloud.core.registry.campaign(report.campaign_id)) == report
    assert [t[:4] for t in cloud.core.registry.tasks(report.campaign_id)] == sorted(want.tasks)
    assert len(cloud.changes) == n + 1
    for d, tasks in by_device.items():
        mine = next(w for w in ws if w.device_id == d)
        assert cloud.core.get_assignment(d, mine.token).tasks == sorted(tasks, key=lambda t: (t.slot, t.task_id))
    assert cloud.runs("allocation", "tapp", "ok") == 1.0 and cloud.seconds("allocation") == report.seconds


def test_a_campaign_reports_disclosure_and_dangerous_devices(cloud: Cloud) -> None:
    walkers(cloud, 4)
    report = cloud.core.create_campaign(campaign_spec(theta=0.01, reporters=[2]))
    devices = {d.device_id: d for d in cloud.core.registry.devices()}
    want = campaigns.allocate(campaign_spec(theta=0.01, reporters=[2]), cloud.core.registry.locations(),
                              {k: d.reputation for k, d in devices.items()}, campaigns.DEFAULT_REPUTATION_FLOOR)
    assert want.dangerous and report.dangerous == len(want.dangerous)
    assert {a.device_id for a in report.allocation if a.dangerous} == want.dangerous
    assert {a.device_id: a.disclosure for a in report.allocation} == want.disclosure
    assert all(a.disclosure > 0 for a in report.allocation)


def test_the_reputation_floor_is_the_specs_when_it_gives_one(cloud: Cloud) -> None:
    ws = walkers(cloud)
    low = ws[0].device_id
    cloud.core.registry.set_reputations({low: 1.0})
    assert low in cloud.core.create_campaign(campaign_spec()).excluded  # -1: the default floor, 1.8
    assert low in cloud.core.create_campaign(campaign_spec(reputation_floor=1.0000001)).excluded
    assert cloud.core.create_campaign(campaign_spec(reputation_floor=0.0)).excluded == []
    assert cloud.core.create_campaign(campaign_spec(reputation_floor=1.0)).excluded == []


def test_a_campaign_is_held_to_the_cores_limits(cloud: Cloud) -> None:
    walkers(cloud)
    cloud.core.campaign_limits = campaigns.Limits(max_cells=1)
    with pytest.raises(RequestError, match=r"^grid: 2 cells exceed the limit of 1$"):
        cloud.core.create_campaign(campaign_spec())
    assert cloud.runs("allocation", "tapp", "error") is None  # refused before any allocation ran


def test_a_campaign_that_cannot_be_allocated_is_counted_as_an_error(cloud: Cloud) -> None:
    cloud.edge(1)
    n = len(cloud.changes)
    with pytest.raises(PreconditionError, match=r"^campaign: no device above the reputation floor has a position inside the grid$"):
        cloud.core.create_campaign(campaign_spec(method="baseline1"))
    assert cloud.runs("allocation", "baseline1", "error") == 1.0 and cloud.seconds("allocation") == 0.0
    assert cloud.runs("allocation", "baseline1", "ok") is None and len(cloud.changes) == n
    assert cloud.core.registry.campaign_count() == 0


def test_a_coverage_campaign_schedules_from_where_devices_are_now(cloud: Cloud) -> None:
    ws = walkers(cloud, 6)
    spec = campaign_spec(method="coverage", subbands=2, rho=0.5)
    report = cloud.core.create_campaign(spec)
    positions = {d.device_id: (d.lat, d.lon) for d in cloud.core.registry.devices()}
    want = campaigns.allocate_coverage(spec, positions, {w.device_id: campaigns.NEUTRAL_REPUTATION for w in ws},
                                       campaigns.DEFAULT_REPUTATION_FLOOR)
    assert (report.coverage, report.cells, report.objective, report.latency_s) == (want.coverage, want.cells, want.objective, want.latency_s)
    assert [t[:4] for t in cloud.core.registry.tasks(report.campaign_id)] == want.tasks
    assert report.allocation and all(a.disclosure == 0.0 and not a.dangerous for a in report.allocation)  # no privacy model here


def answer(cloud: Cloud, a: Assignment, task: Task, reading: float, frame_id: int):
    f = frame(a, Split(2, 4), frame_id=frame_id)
    f.task, f.reading = task, reading
    return cloud.core.process(f)


def test_the_last_answer_scores_the_campaign_and_publishes_the_reputations(cloud: Cloud) -> None:
    ws = walkers(cloud, 4)
    spec = campaign_spec(reporters=[2])  # two reporters per cell and slot: CrowdPower has readings to compare
    report = cloud.core.create_campaign(spec)
    tasks = [(next(w for w in ws if w.device_id == a.device_id), t) for a in report.allocation for t in a.tasks]
    assert len(tasks) == 8
    assert cloud.core.campaign_report(report.campaign_id).results == 0
    for k, (w, t) in enumerate(tasks[:-1]):
        r = answer(cloud, w, t, 0.0 if k == 1 else 0.1 * k, k + 1)  # a reading of 0 is an answer too
        assert r.ok, r.error
        stored = cloud.core.registry.campaign(report.campaign_id)
        assert stored["status"] == "running" and stored["quality"] == []
    again = answer(cloud, *tasks[0], 99.0, 50)  # a resent frame: stored once
    assert again.ok and cloud.core.campaign_report(report.campaign_id).results == 7
    assert cloud.core.campaign_report(report.campaign_id).status == "running"
    last = answer(cloud, *tasks[-1], 0.3, 99)
    assert last.cloud_compute_s == 0.0  # the clock stood still while the blocks ran
    label = last.head(BUILTIN_HEAD).label
    stored = cloud.core.registry.campaign(report.campaign_id)  # scored by the last answer, not by asking
    assert stored["status"] == "done"
    rows = cloud.core.registry.tasks(report.campaign_id)
    assert [r[6] for r in rows] == [label] * 8 and all(r[4] for r in rows)
    done = campaign_report_from_dict(stored)
    want = campaigns.score(spec, rows)
    assert len(want) == 4
    names = {w.device_id: f"w{k}" for k, w in enumerate(ws)}
    assert done.quality == [dataclasses.replace(q, device_name=names[d]) for d, q in sorted(want.items())]
    assert done.results == 8
    assert {d.device_id: d.reputation for d in cloud.core.registry.devices() if d.device_id in want} == {
        d: q.reputation for d, q in want.items()}
    for d, q in want.items():
        assert cloud.prom.get_sample_value("ecd_device_reputation", {"device_id": d}) == q.reputation
    asked = cloud.core.campaign_report(report.campaign_id)
    assert (asked.status, asked.results, asked.quality) == ("done", 8, done.quality)
    quality, floor = cloud.core.reputations()
    assert floor == campaigns.DEFAULT_REPUTATION_FLOOR
    assert quality == [DeviceQuality(d.device_id, d.name, 0, 0.0, d.reputation, 0) for d in cloud.core.registry.devices()]
    assert {q.device_id for q in quality} == {w.device_id for w in ws}


def test_a_reading_is_taken_up_to_its_bound_exactly(cloud: Cloud) -> None:
    ws = walkers(cloud)
    report = cloud.core.create_campaign(campaign_spec())
    owner = next(w for w in ws if w.device_id == report.allocation[0].device_id)
    first, second = report.allocation[0].tasks[:2]
    for k, reading in enumerate((MAX_READING * 1.0000001, float("nan"), -float("inf"))):
        r = answer(cloud, owner, first, reading, k + 1)
        assert r.error.status == "INVALID_ARGUMENT" and r.heads == []
        assert r.error.message == f"reading: expected a finite number within ±{MAX_READING:g}, got {reading}"
    assert answer(cloud, owner, first, MAX_READING, 10).ok and answer(cloud, owner, second, -MAX_READING, 11).ok
    assert [r[5] for r in cloud.core.registry.tasks(report.campaign_id) if r[0] in (first.task_id, second.task_id)] == [MAX_READING, -MAX_READING]


def test_a_task_of_another_device_is_refused(cloud: Cloud) -> None:
    ws = walkers(cloud)
    report = cloud.core.create_campaign(campaign_spec())
    task = report.allocation[0].tasks[0]
    other = next(w for w in ws if w.device_id != report.allocation[0].device_id)
    r = answer(cloud, other, task, 20.0, 1)
    assert r.error.status == "FAILED_PRECONDITION" and r.heads == []
    assert r.error.message == f"task: campaign {task.campaign_id!r} has no task {task.task_id} for device {other.device_id}"
    with pytest.raises(NotFoundError, match=r"^campaign_id: 'nope' is not a campaign of this cloud$"):
        cloud.core.campaign_report("nope")


def test_a_campaign_with_no_tasks_stays_running(cloud: Cloud) -> None:
    walkers(cloud)
    report = cloud.core.create_campaign(campaign_spec())
    cloud.core.registry._execute("DELETE FROM tasks WHERE campaign_id = ?", (report.campaign_id,))
    got = cloud.core.campaign_report(report.campaign_id)
    assert (got.status, got.results, got.quality) == ("running", 0, [])


def test_site_selection_is_timed_and_counted(cloud: Cloud) -> None:
    cloud.edge(1, A_POS)
    cloud.register(sensors={"temperature": 9.0, "camera": 9.0, "pulse": 9.0, "ambient_temperature": 9.0})
    got = cloud.core.select_site(SiteRequest("fire", 5.0, 5.0, A_POS))
    assert got.sites and cloud.runs("site_selection", "crowdpower", "ok") == 1.0
    with pytest.raises(RequestError):
        cloud.core.select_site(SiteRequest("fire", 5.0, 5.0, None))
    assert cloud.runs("site_selection", "crowdpower", "error") == 1.0
    assert cloud.seconds("site_selection") == 0.0  # the clock stood still: both runs took 0 s


# --- heads -------------------------------------------------------------------------------------


def head(name: str, labels: list[str], bias: list[float] | None = None) -> HeadSpec:
    return HeadSpec(M.model_id, name, labels, [0.25] * (len(labels) * len(M.labels)), bias if bias is not None else [], "logits")


def test_a_head_is_stored_and_listed_as_given(cloud: Cloud) -> None:
    assert cloud.core.add_head(head("odd", ["even", "odd"], [1.5, -2.0])) == 2
    listed = cloud.core.list_heads(M.model_id)
    assert [h.name for h in listed] == [BUILTIN_HEAD, "odd"]
    assert listed[1] == HeadSpec(M.model_id, "odd", ["even", "odd"], [0.25] * 20, [1.5, -2.0], "logits")
    assert listed[0].labels == list(M.labels) and listed[0].model_id == M.model_id
    assert cloud.core.registry.heads(M.model_id)[0]["bias"] == [1.5, -2.0]
    assert cloud.core.add_head(head("odd", ["a", "b", "c"])) == 2  # replaced
    assert cloud.core.list_heads(M.model_id)[1].bias == [0.0, 0.0, 0.0]


def test_head_limits_are_exact(cloud: Cloud) -> None:
    labels = [f"l{k}" for k in range(MAX_HEAD_LABELS)]
    assert cloud.core.add_head(head("wide", labels)) == 2
    with pytest.raises(LimitError, match=rf"^labels: at most {MAX_HEAD_LABELS} per head, got {MAX_HEAD_LABELS + 1}$"):
        cloud.core.add_head(head("wider", labels + ["x"]))
    with pytest.raises(RequestError, match=r"^labels\[1\]: control characters are not allowed"):
        cloud.core.add_head(head("bad", ["a", "b\x07"]))
    for k in range(MAX_HEADS_PER_MODEL - 2):
        cloud.core.add_head(head(f"h{k}", ["a"]))
    assert len(cloud.core.list_heads(M.model_id)) == MAX_HEADS_PER_MODEL
    with pytest.raises(LimitError, match=rf"^name: {M.model_id} already has {MAX_HEADS_PER_MODEL} heads \(the limit\); replace one instead$"):
        cloud.core.add_head(head("one_more", ["a"]))
    assert cloud.core.add_head(head("h0", ["b"])) == MAX_HEADS_PER_MODEL  # replacing one at the limit is fine


# --- the data plane's remaining checks -----------------------------------------------------------


def test_a_frame_is_held_to_the_cores_batch_limit(tmp_path: Path) -> None:
    c = CloudCore(Registry(str(tmp_path / "r.sqlite3")), [M], max_batch=1)
    c.register_edge(EdgeRegistration("127.0.0.1:1", 10.0))
    a = register(c)
    x = M.input.preprocess(load_heldout(M).images[:2])
    r = c.process(frame(a, Split(2, 4), x))
    assert not r.ok and r.error.status == "RESOURCE_EXHAUSTED" and r.error.message == "tensor.shape[0]: a batch of 2 exceeds the limit of 1 (max_batch)"
    assert c.process(frame(a, Split(2, 4), x[:1])).ok


def test_a_served_model_runs_through_its_batcher_when_it_has_one() -> None:
    runner = BlockRunner(M)
    x = M.input.preprocess(load_heldout(M).images[:1])
    batcher = DynamicBatcher(runner.run)
    with_batcher = ServedModel(M, runner, batcher=batcher)
    assert np.allclose(with_batcher.run(x, 0, N), runner.run(x, 0, N)) and batcher.stats.frames == 1
    plain = ServedModel(M, runner)
    assert np.allclose(plain.run(x, 0, N), runner.run(x, 0, N)) and plain.batcher is None


@pytest.mark.parametrize("size", [1, MIN_CHUNK_BYTES - 1])
def test_a_chunk_size_below_the_minimum_is_refused(core: CloudCore, size: int) -> None:
    with pytest.raises(RequestError, match=rf"^max_chunk_bytes: expected 0 \(the server's default\) or >= {MIN_CHUNK_BYTES}, got {size}$"):
        list(core.partition_chunks(PartitionRequest(M.model_id, "", 0, 0, size)))
    assert list(core.partition_chunks(PartitionRequest(M.model_id, "", 0, 0, MIN_CHUNK_BYTES)))


# --- records and profiles ------------------------------------------------------------------------


def test_profiles_are_a_shipped_name_or_measured_toml() -> None:
    assert parse_profile("pi4") == load_device("pi4")
    measured = dataclasses.replace(load_device("pi4"), name="mine")
    assert parse_profile(device_to_toml(measured)) == measured
    with pytest.raises(RequestError, match="^" + re.escape(f"profile: neither a known profile ({', '.join(known_devices())}) nor profile TOML") + "$"):
        parse_profile("= =")
    with pytest.raises(RequestError, match=r"^profile: device profile in the request: missing field 'ram_mb'$"):
        parse_profile(device_to_toml(measured).replace("ram_mb = ", "ram = "))
    assert [m.model_id for m in load_models(["digits_cnn"])] == ["digits_cnn"]


def test_stored_reports_read_back_equal() -> None:
    p = PlacementReport(3, "otacs", "edge lost", 9.5, 4.0, 5.5, 0.01, 123,
                        [EdgePlacement("e1", "h:1", Position(1.0, 2.0), True, True, 2, 5.0), EdgePlacement("e2", "h:2", None, False, False, 0, 1.0)],
                        [DevicePlacement("d1", "one", "e1", Position(1.5, 2.5), 0.25), DevicePlacement("d2", "two", "e1", None, 0.0)], "{}")
    assert placement_report_from_dict(json.loads(json.dumps(placement_report_to_dict(p)))) == p
    c = CampaignReport("c1", campaign_spec(), "done", 4, 4, 3, 2, 1, 7.5, 0.2,
                       allocation=[DeviceTasks("d1", "one", [Task("c1", 0, 1, 0), Task("c1", 1, 0, 1)], 0.5, True)],
                       results=4, quality=[DeviceQuality("d1", "one", 2, 0.9, 2.1, 0)], excluded=["d9"], coverage=1, cells=2,
                       objective=0.5, latency_s=0.1)
    assert campaign_report_from_dict(json.loads(json.dumps(dataclasses.asdict(c)))) == c
