"""Campaigns in the running cloud: TAPP (paper 002) hands devices their sensing tasks from their
traces, the devices run exactly those tasks, and CrowdPower (paper 001) scores the reports — a
device sending corrupted readings ends below the reputation floor and is not chosen again."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest

from cloud_server import campaigns
from cloud_server.config import CloudConfig
from cloud_server.service import start_cloud
from cloud_server.scheduler_service import SchedulerClient
from device_agent.agent import AgentConfig, DeviceAgent
from device_agent.sources import heldout
from ecd.errors import EcdError, RequestError
from ecd.transport import serde
from ecd.transport.rpc import LoopThread, wait_healthy
from ecd.types import Position, Task
from ecd.scheduler_types import CampaignSpec, Grid
from ecd.v1 import ecd_pb2_grpc as pb_grpc
from edge_node.service import EdgeConfig, start_edge
from scheduling.allocation import coverage, tapp

# One row of two cells side by side (west, east) in Manhattan.
GRID = Grid(Position(40.70, -74.02), Position(40.72, -73.98), rows=1, cols=2)
WEST, EAST = (40.71, -74.01), (40.71, -73.99)


def spec(**kw) -> CampaignSpec:
    return CampaignSpec(**{"name": "heat", "grid": GRID, "slots": 16, "reporters": [3], "method": "tapp", "theta": 5.0, **kw})


def trace_file(tmp_path: Path, name: str, west: int, east: int) -> str:
    path = tmp_path / f"{name}.csv"
    path.write_text("lat,lon\n" + "".join(f"{WEST[0]},{WEST[1]}\n" for _ in range(west))
                    + "".join(f"{EAST[0]},{EAST[1]}\n" for _ in range(east)))
    return str(path)


def test_cells_profiles_and_slot_layout() -> None:
    points = np.array([WEST, EAST, (40.72, -73.98), (41.0, -74.0)])
    assert campaigns.cells_of(GRID, points).tolist() == [0, 1, 1, -1]
    ids, p = campaigns.profiles(GRID, {"a": [WEST, WEST, EAST, (0.0, 0.0)], "b": [(0.0, 0.0)]})
    assert ids == ["a"] and p.tolist() == [[2 / 3, 1 / 3]]
    x = np.array([[4, 1], [3, 2], [2, 3]])  # 9 tasks in cell 0 over 3 slots: 3 distinct reporters each
    slots = Counter((cell, slot) for _, cell, slot in campaigns.layout(x, 3))
    assert slots[(0, 0)] == slots[(0, 1)] == slots[(0, 2)] == 3
    per = Counter((i, cell, slot) for i, cell, slot in campaigns.layout(np.array([[3, 0], [3, 0], [3, 0]]), 3))
    assert set(per.values()) == {1}  # x_ij <= slots: nobody reports twice in one slot


def test_live_quality_shares_evenly_within_the_noise_and_starves_a_far_reading() -> None:
    honest = np.array([20.1, 19.8, 20.3])
    assert campaigns.slot_quality(honest) == pytest.approx([1 / 3] * 3)  # the paper's rule would split these unevenly
    q = campaigns.slot_quality(np.array([20.1, 19.8, 26.5]))
    assert q[2] < 0.05 < 0.45 < q[0]
    assert campaigns.outliers(honest).tolist() == [False] * 3
    assert campaigns.outliers(np.array([20.1, 19.8, 20.0, 31.0])).tolist() == [False, False, False, True]
    assert campaigns.outliers(np.array([20.1, 19.8, 26.5])).tolist() == [False, False, True]


@pytest.mark.parametrize("change,field", [
    (dict(theta=0.0), "theta"), (dict(theta=float("nan")), "theta"), (dict(slots=0), "slots"),
    (dict(reporters=[0]), "reporters"), (dict(reporters=[1, 2, 3]), "reporters"), (dict(method="best"), "method"),
    (dict(grid=Grid(Position(40.72, -74.02), Position(40.70, -73.98), 1, 2)), "grid"),
    (dict(grid=Grid(Position(40.70, -74.02), Position(40.72, -73.98), 0, 2)), "grid.rows"),
    (dict(grid=Grid(Position(95.0, -74.02), Position(96.0, -73.98), 1, 2)), "grid.south_west.lat"),
    (dict(slots=1000, reporters=[2000]), "exceed the limit"),
])
def test_bad_campaigns_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(RequestError, match=field.replace(".", r"\.")):
        campaigns.check_spec(spec(**change))


@pytest.fixture
def town(tmp_path: Path):
    loop = LoopThread()
    cloud = loop.run(start_cloud(replace(CloudConfig(), db=str(tmp_path / "cloud.sqlite3"), metrics_port=-1)))
    target = f"127.0.0.1:{cloud.port}"
    edge = loop.run(start_edge(replace(EdgeConfig(), cloud=target, metrics_port=-1, model_dir=str(tmp_path / "edge"))))
    wait_healthy(f"127.0.0.1:{edge.port}")
    agents: list[DeviceAgent] = []
    yield loop, cloud, target, agents
    for a in agents:
        a.close()
    loop.run(edge.stop(0))
    loop.run(cloud.stop(0))
    loop.close()


def test_a_campaign_hands_out_tapps_allocation_and_crowdpower_catches_a_corrupt_device(town, tmp_path: Path) -> None:
    loop, cloud, target, agents = town
    shapes = [(3, 1), (1, 3), (2, 2), (3, 1), (1, 3), (2, 2), (2, 2)]  # check-ins west, east
    for k, (west, east) in enumerate(shapes):
        agent = DeviceAgent(AgentConfig(cloud=target, name=f"d{k}", split=3, sensor_seed=k, corrupt_reports=k == 2,
                                        trace=trace_file(tmp_path, f"d{k}", west, east), trace_every=1000,
                                        model_dir=str(tmp_path / f"a{k}")))
        agents.append(agent)
        agent.connect()
        for position in agent.trace[1:]:  # walk the trace so the cloud holds all of it
            agent.report_location(position)
    client = SchedulerClient(target)
    try:
        report = client.create_campaign(spec())
        assert report.status == "running" and report.requested_work == 96 == report.allocated_work
        # the same allocation as the library on the same traces and theta
        ids, profiles = campaigns.profiles(GRID, cloud.registry.locations())
        expected = tapp.allocate(tapp.TappInstance(profiles, np.full(len(ids), 16), np.array([48, 48]), np.full(len(ids), 5.0)), "tapp")
        got = np.zeros_like(expected.x)
        for d in report.allocation:
            for t in d.tasks:
                got[ids.index(d.device_id), t.cell] += 1
        assert (got == expected.x).all()
        assert report.dangerous == expected.dangerous and report.chosen == int((expected.x.sum(1) > 0).sum())
        # each chosen device receives exactly its tasks, and answers them
        allocated = {d.device_id: set(d.tasks) for d in report.allocation}
        for agent in agents:
            mine = allocated.get(agent.assignment.device_id, set())
            assert agent.wait_for_tasks(len(mine))
            assert agent.follower.tasks_seen == mine
            agent.run(heldout("digits_cnn", 18))
            assert agent.status().tasks_done == len(mine)
        done = client.campaign(report.campaign_id)
        assert done.status == "done" and done.results == 96
        stored = cloud.registry.tasks(report.campaign_id)
        assert all(r[4] for r in stored) and len(stored) == 96
        assert {(r[1], Task(report.campaign_id, r[0], r[2], r[3])) for r in stored} == {
            (d, t) for d, ts in allocated.items() for t in ts}
        # CrowdPower: the corrupt device's reputation is below the floor, everyone else's above
        by_name = {q.device_name: q for q in done.quality}
        floor = campaigns.DEFAULT_REPUTATION_FLOOR
        assert by_name["d2"].reputation < floor < min(q.reputation for n, q in by_name.items() if n != "d2")
        reputations, _ = client.reputations()
        assert {q.device_name: q.reputation for q in reputations}["d2"] == pytest.approx(by_name["d2"].reputation)
        # ... and the next campaign leaves it out
        again = client.create_campaign(spec(name="heat 2"))
        d2 = next(a.assignment.device_id for a in agents if a.cfg.name == "d2")
        assert d2 in again.excluded and d2 not in {d.device_id for d in again.allocation}
    finally:
        client.close()


def test_a_coverage_campaign_schedules_papers_004_choice_and_the_chosen_devices_report_from_their_cells(town, tmp_path: Path) -> None:
    """Paper 004 over the live devices: users are the devices with a position in the grid, the
    subareas its cells; the API's choice equals the library's on the same instance."""
    loop, cloud, target, agents = town
    grid = Grid(Position(40.70, -74.02), Position(40.72, -73.98), rows=2, cols=2)
    spots = [(40.705, -74.01), (40.705, -74.005), (40.715, -74.01), (40.715, -73.99), (40.705, -73.99), (40.706, -73.995)]
    for k, (lat, lon) in enumerate(spots):
        agent = DeviceAgent(AgentConfig(cloud=target, name=f"c{k}", split=3, sensor_seed=k, position=f"{lat},{lon}",
                                        model_dir=str(tmp_path / f"c{k}")))
        agents.append(agent)
        agent.connect()
    client = SchedulerClient(target)
    try:
        request = spec(grid=grid, slots=2, method="coverage", subbands=3, rho=0.3)
        report = client.create_campaign(request)
        positions = {d.device_id: (d.lat, d.lon) for d in cloud.registry.devices()}
        ids, inst = campaigns.coverage_instance(request, positions)
        expected = coverage.allocate(inst, "proposed", seed=campaigns.COVERAGE_SEED)
        chosen = {ids[k] for k in expected.scheduled}
        assert {d.device_id for d in report.allocation} == chosen and report.chosen == 3
        assert (report.coverage, report.cells) == (expected.coverage, 4)
        assert report.objective == pytest.approx(expected.objective) and report.latency_s == pytest.approx(expected.latency)
        assert report.participants == 6 and report.allocated_work == 3 * 2
        for d in report.allocation:  # one report per slot, from the device's own cell
            cell = campaigns.cell_of(grid, Position(*positions[d.device_id]))
            assert sorted((t.cell, t.slot) for t in d.tasks) == [(cell, 0), (cell, 1)]
        for agent in agents:
            mine = {t for d in report.allocation if d.device_id == agent.assignment.device_id for t in d.tasks}
            assert agent.wait_for_tasks(len(mine))
            agent.run(heldout("digits_cnn", 3))
            assert agent.status().tasks_done == len(mine)
        assert client.campaign(report.campaign_id).status == "done"
        with pytest.raises(EcdError, match="FAILED_PRECONDITION: subbands: .* N < K"):
            client.create_campaign(replace(request, subbands=6))
        with pytest.raises(EcdError, match="INVALID_ARGUMENT: rho"):
            client.create_campaign(replace(request, rho=1.5))
    finally:
        client.close()


def test_campaign_api_refuses_bad_input_and_keeps_serving(town) -> None:
    loop, cloud, target, agents = town
    channel = grpc.insecure_channel(target)
    try:
        stub = pb_grpc.SchedulerStub(channel)
        for change, code, field in ((dict(theta=-1.0), grpc.StatusCode.INVALID_ARGUMENT, "theta"),
                                    (dict(grid=Grid(Position(40.7, -74.0), Position(40.7, -74.0), 1, 1)), grpc.StatusCode.INVALID_ARGUMENT, "grid"),
                                    (dict(), grpc.StatusCode.FAILED_PRECONDITION, "campaign")):  # no device has a trace
            with pytest.raises(grpc.RpcError) as e:
                stub.CreateCampaign(serde.campaign_spec_to_pb(spec(**change)), timeout=30)
            assert e.value.code() == code and field in e.value.details()
        client = SchedulerClient(target)
        with pytest.raises(EcdError, match="NOT_FOUND: campaign_id"):
            client.campaign("nope")
        client.close()
    finally:
        channel.close()


def test_hostile_task_reports_and_watches_are_refused_and_the_cloud_serves_on(tiers) -> None:
    """A task the device was not given, a NaN reading, a watch with a wrong token: each refused
    with the field named; the next honest frame is answered."""
    from ecd import zoo
    from ecd.manifest import load_heldout
    from ecd.v1 import ecd_pb2 as pb
    from harness import frame_for

    m = zoo.load_manifest("digits_cnn")
    x = m.input.preprocess(load_heldout(m).images[:1])
    a = tiers.register(split=3)
    forged = frame_for(a, m, x, 1)
    forged.task.CopyFrom(pb.Task(campaign_id="someone-else", task_id=7, cell=0, slot=0))
    forged.reading = 20.0
    nan = frame_for(a, m, x, 2)
    nan.task.CopyFrom(pb.Task(campaign_id="someone-else", task_id=8, cell=0, slot=0))
    nan.reading = float("nan")
    huge = frame_for(a, m, x, 4)
    huge.task.CopyFrom(pb.Task(campaign_id="someone-else", task_id=9, cell=0, slot=0))
    huge.reading = 1e300  # would overflow CrowdPower's squared distances into NaN reputations
    honest = frame_for(a, m, x, 3)
    results = {r.frame_id: r for r in tiers.edge_stub.Stream(iter([forged, nan, huge, honest]), timeout=60)}
    assert results[4].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "reading" in results[4].error.message
    assert results[1].error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0] and "task" in results[1].error.message
    assert results[2].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "reading" in results[2].error.message
    assert not results[3].HasField("error")
    with pytest.raises(grpc.RpcError) as e:
        next(iter(tiers.cloud_stub.WatchAssignment(pb.GetAssignmentRequest(device_id=a.device_id, token="stolen?"), timeout=10)))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_operator_calls_are_taken_only_from_the_configured_hosts() -> None:
    """Placements and campaigns show every device's position: by default only loopback may ask."""
    from cloud_server.scheduler_service import operator_check
    from ecd.transport.rpc import peer_host
    from ecd.errors import PermissionDeniedError
    from ecd.transport.catalog import to_status

    assert peer_host("ipv4:10.1.2.3:5555") == "10.1.2.3" and peer_host("ipv6:[::1]:4242") == "::1"
    loopback = operator_check(("127.0.0.1", "::1"))
    loopback("ipv4:127.0.0.1:40000")
    loopback("ipv6:[::1]:40000")
    with pytest.raises(PermissionDeniedError, match="10.1.2.3.*operator_peers") as e:
        loopback("ipv4:10.1.2.3:5555")
    assert to_status(e.value)[0] == grpc.StatusCode.PERMISSION_DENIED
    operator_check(("any",))("ipv4:10.1.2.3:5555")
    operator_check(("unix",))("unix:/run/ecd/cloud.sock")  # a unix socket is taken when "unix" is listed
    for allowed, peer in ((("127.0.0.1",), "unix:/run/ecd/cloud.sock"), (("unix",), "ipv4:127.0.0.1:1")):
        with pytest.raises(PermissionDeniedError, match="operator_peers"):
            operator_check(allowed)(peer)
