"""Placement (paper 003) inside the running cloud: it decides each device's edge node, agents follow
it without restarting, and a lost edge node's devices move to the edges a new placement names."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from cli import ecd

from cloud_server.config import CloudConfig
from cloud_server.service import start_cloud
from cloud_server.scheduler_service import SchedulerClient
from device_agent.agent import AgentConfig, DeviceAgent
from device_agent.sources import heldout
from ecd.transport.rpc import LoopThread, wait_healthy
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc
from edge_node.service import EdgeConfig, start_edge

# Three edge nodes a few km apart in Manhattan, four devices around each (degrees).
EDGES = [(40.7060, -74.0090), (40.7580, -73.9855), (40.8075, -73.9626)]
OFFSETS = [(0.004, 0.003), (-0.003, 0.004), (0.002, -0.004), (-0.004, -0.002)]


@pytest.fixture
def city(tmp_path: Path):
    """A cloud and three edge nodes at positions, real servers on loopback."""
    loop = LoopThread()
    cloud = loop.run(start_cloud(replace(CloudConfig(), db=str(tmp_path / "cloud.sqlite3"), metrics_port=0,
                                         edge_timeout_s=3.0, placement_check_s=0.2, placement_activation_cost=1.0)))
    target = f"127.0.0.1:{cloud.port}"
    edges = [
        loop.run(start_edge(replace(EdgeConfig(), cloud=target, metrics_port=-1, heartbeat_s=0.3,
                                    model_dir=str(tmp_path / f"edge{i}"), position=f"{lat},{lon}")))
        for i, (lat, lon) in enumerate(EDGES)
    ]
    wait_healthy(target)
    agents: list[DeviceAgent] = []
    yield loop, cloud, edges, agents
    for a in agents:
        a.close()
    for e in edges:
        if e.server is not None:
            loop.run(e.stop(0, leave=False))
    loop.run(cloud.stop(0))
    loop.close()


def join(city, tmp_path: Path, n_per_edge: int = 4) -> list[DeviceAgent]:
    loop, cloud, edges, agents = city
    for i, (lat, lon) in enumerate(EDGES):
        for k, (dlat, dlon) in enumerate(OFFSETS[:n_per_edge]):
            agent = DeviceAgent(AgentConfig(cloud=f"127.0.0.1:{cloud.port}", name=f"d{i}{k}", split=3,
                                            position=f"{lat + dlat},{lon + dlon}", model_dir=str(tmp_path / f"a{i}{k}")))
            agents.append(agent)
            agent.connect()
    return agents


def stream(agent: DeviceAgent, frames: int = 8) -> list:
    outcomes = agent.run(heldout("digits_cnn", frames))
    assert len(outcomes) == frames and all(o.result.ok for o in outcomes)
    return outcomes


def test_placement_decides_every_devices_edge_and_matches_the_offline_solver(city, tmp_path: Path) -> None:
    loop, cloud, edges, _ = city
    agents = join(city, tmp_path)
    client = SchedulerClient(f"127.0.0.1:{cloud.port}")
    try:
        report = client.place("otacs_ls", seed=0)
    finally:
        client.close()
    assert report.method == "otacs_ls" and report.trigger == "operator"
    assert len(report.devices) == 12 and all(d.edge_id for d in report.devices)
    assert report.total_cost == pytest.approx(report.activation_cost + report.service_cost)
    # the same instance, solved offline by the CLI, gives the same assignment
    instance = tmp_path / "instance.json"
    instance.write_text(report.instance_json)
    proc = ecd("placement", "solve", "--instance", str(instance), "--method", "otacs_ls", "--json")
    assert proc.returncode == 0, proc.stderr
    offline = json.loads(proc.stdout)
    d = json.loads(report.instance_json)
    server_ids = [s["id"] for s in d["servers"]]
    offline_edge = {u["id"]: server_ids[max(row)] for u, row in zip(d["users"], offline["assignment"])}
    placed = {p.device_id: p.edge_id for p in report.devices}
    assert placed == offline_edge
    assert offline["total_cost"] == pytest.approx(report.total_cost)
    # three clusters, one edge each: every edge is active, each device on its own cluster's edge
    assert {e.edge_id for e in report.edges if e.active} == {e.edge_id for e in edges}
    # every device's frames are served by the edge placement names
    for agent in agents:
        assert agent.wait_for_placement(report.version)
        outcomes = stream(agent)
        assert {o.result.edge_id for o in outcomes} == {placed[agent.assignment.device_id]}


def test_a_lost_edge_nodes_devices_move_without_restarting_the_agents(city, tmp_path: Path) -> None:
    loop, cloud, edges, _ = city
    agents = join(city, tmp_path)
    client = SchedulerClient(f"127.0.0.1:{cloud.port}")
    try:
        first = client.place()
        for agent in agents:
            assert agent.wait_for_placement(first.version)
            stream(agent, 4)
        lost = edges[1]
        loop.run(lost.stop(0, leave=False))  # no goodbye: the cloud notices the missing heartbeats
        lost.server = None
        moved = [a for a in agents if a.assignment.edge_id == lost.edge_id]
        assert len(moved) == 4
        moves_before = {id(a): a.moves for a in agents}
        for agent in moved:
            assert agent.follower.wait_for_move(30), "the cloud never named a new edge"
        second = client.placement()
    finally:
        client.close()
    assert second.version > first.version and second.trigger == "edge lost"
    placed = {p.device_id: p.edge_id for p in second.devices}
    assert lost.edge_id not in placed.values()
    assert not next(e for e in second.edges if e.edge_id == lost.edge_id).alive
    for agent in agents:
        outcomes = stream(agent, 6)
        assert {o.result.edge_id for o in outcomes} == {placed[agent.assignment.device_id]}
    assert [a.moves - moves_before[id(a)] for a in agents] == [1 if a in moved else 0 for a in agents]


def test_bad_placement_input_names_the_field(tmp_path: Path) -> None:
    loop = LoopThread()
    cloud = loop.run(start_cloud(replace(CloudConfig(), db=str(tmp_path / "c.sqlite3"), metrics_port=-1)))
    channel = grpc.insecure_channel(f"127.0.0.1:{cloud.port}")
    try:
        scheduler = pb_grpc.SchedulerStub(channel)
        stub = pb_grpc.CloudServerStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            scheduler.GetPlacement(pb.GetPlacementRequest(), timeout=10)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "placement" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            scheduler.Place(pb.PlaceRequest(), timeout=10)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "edges" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            scheduler.Place(pb.PlaceRequest(method="best"), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "method" in e.value.details()
        for position, field in ((pb.Position(lat=91, lon=0), "position.lat"), (pb.Position(lat=0, lon=float("nan")), "position.lon")):
            with pytest.raises(grpc.RpcError) as e:
                stub.RegisterEdge(pb.RegisterEdgeRequest(endpoint="127.0.0.1:9", capacity=1, position=position), timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            stub.RegisterEdge(pb.RegisterEdgeRequest(endpoint="127.0.0.1:9", capacity=1, activation_cost=-1), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "activation_cost" in e.value.details()
        edge_id = stub.RegisterEdge(pb.RegisterEdgeRequest(endpoint="127.0.0.1:9", capacity=1,
                                                           position=pb.Position(lat=40.7, lon=-74.0)), timeout=10).edge_id
        a = stub.RegisterDevice(pb.RegisterDeviceRequest(
            device_name="x", profile="pi4", radio="wifi", preferences=pb.Preferences(w_energy=1, w_privacy=1),
            model_id="digits_cnn", split_device=3, encoding=pb.FLOAT32, position=pb.Position(lat=40.71, lon=-74.01)), timeout=10)
        assert a.edge_id == edge_id
        with pytest.raises(grpc.RpcError) as e:
            stub.ReportLocation(pb.LocationReport(device_id=a.device_id, token=a.token), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "position" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            stub.ReportLocation(pb.LocationReport(device_id=a.device_id, token="wrong", position=pb.Position(lat=1, lon=1)), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        report = scheduler.Place(pb.PlaceRequest(method="exact"), timeout=30)  # the cloud keeps serving
        assert [d.edge_id for d in report.devices] == [edge_id]
    finally:
        channel.close()
        loop.run(cloud.stop(0))
        loop.close()


def test_an_agent_keeps_following_its_assignment_across_a_cloud_restart(tmp_path: Path) -> None:
    """The cloud restarts on the same registry and port: the agent's watch comes back by itself and
    the next placement reaches it."""
    loop = LoopThread()
    cfg = replace(CloudConfig(), db=str(tmp_path / "cloud.sqlite3"), metrics_port=-1, placement_check_s=0.2)
    cloud = loop.run(start_cloud(cfg))
    port = cloud.port
    edge = loop.run(start_edge(replace(EdgeConfig(), cloud=f"127.0.0.1:{port}", metrics_port=-1, heartbeat_s=0.3,
                                       model_dir=str(tmp_path / "edge"), position=f"{EDGES[0][0]},{EDGES[0][1]}")))
    agent = DeviceAgent(AgentConfig(cloud=f"127.0.0.1:{port}", name="d", split=3, position=f"{EDGES[0][0]},{EDGES[0][1]}",
                                    model_dir=str(tmp_path / "a")))
    try:
        agent.connect()
        client = SchedulerClient(f"127.0.0.1:{port}")
        first = client.place()
        client.close()
        assert agent.wait_for_placement(first.version)
        loop.run(cloud.stop(0))
        cloud = loop.run(start_cloud(replace(cfg, port=port)))  # same registry, same port
        client = SchedulerClient(f"127.0.0.1:{port}")
        second = client.place()
        client.close()
        assert second.version == first.version + 1  # the registry kept the placement's history
        assert agent.wait_for_placement(second.version), "the agent's watch did not come back"
        assert len(stream(agent, 4)) == 4
    finally:
        agent.close()
        loop.run(edge.stop(0))
        loop.run(cloud.stop(0))
        loop.close()
