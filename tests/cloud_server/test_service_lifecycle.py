"""The cloud server's start and stop (cloud_server.service), over real gRPC on loopback: what it
serves once started (its write path healthy, its metrics with the schedulers' series, the options
that reach its parts), and what a stop gives back (the schedulers' lease, at once, to another
replica; the operator view's port; the serving port)."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloud_server.config import CloudConfig
from cloud_server.leader import SchedulerLeader
from cloud_server.registry import Registry
from cloud_server.service import REGISTRY_HEALTH, start_cloud
from ecd.transport.rpc import LoopThread, wait_healthy
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc
from harness import start_tiers, stop_tiers, wait_until


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_a_started_cloud_serves_its_write_path_as_healthy_and_the_schedulers_metrics(tmp_path: Path) -> None:
    loop = LoopThread()
    cloud = loop.run(start_cloud(replace(CloudConfig(), db=str(tmp_path / "c.sqlite3"), port=0, metrics_port=0)))
    try:
        wait_healthy(f"127.0.0.1:{cloud.port}")
        assert cloud.metrics_port > 0 and cloud.panel_port == -1  # the operator view is off by default
        with grpc.insecure_channel(f"127.0.0.1:{cloud.port}") as ch:
            check = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=REGISTRY_HEALTH), timeout=10)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            # both services on the one port
            pb_grpc.CloudServerStub(ch).ListHeads(pb.ListHeadsRequest(model_id="digits_cnn"), timeout=10)
            pb_grpc.SchedulerStub(ch).ListReputations(pb.ReputationsRequest(), timeout=10)
        # the schedulers' series are on the cloud's own registry (the one its metrics port serves)
        assert cloud.metrics.registry.get_sample_value("ecd_registry_writable") == 1.0
        wait_until(lambda: cloud.metrics.registry.get_sample_value("ecd_scheduler_leader") == 1.0, "this replica to lead")
    finally:
        loop.run(cloud.stop(0))
        loop.close()


def test_without_a_metrics_port_none_is_opened(tmp_path: Path) -> None:
    loop = LoopThread()
    cloud = loop.run(start_cloud(replace(CloudConfig(), db=str(tmp_path / "c.sqlite3"), port=0, metrics_port=-1)))
    try:
        assert cloud.metrics_port == -1
    finally:
        loop.run(cloud.stop(0))
        loop.close()


def test_a_stopped_cloud_gives_the_schedulers_lease_up_at_once_and_closes_its_ports(tmp_path: Path) -> None:
    db = str(tmp_path / "c.sqlite3")
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123456789abcdef\n")
    token.chmod(0o600)
    loop = LoopThread()
    cloud = loop.run(start_cloud(replace(CloudConfig(), db=db, port=0, metrics_port=-1, panel_port=0,
                                         panel_token_file=str(token), leader_lease_s=600.0)))
    try:
        wait_healthy(f"127.0.0.1:{cloud.port}")
        wait_until(lambda: cloud.core.leader.leading, "this replica to lead")
        ports = cloud.port, cloud.panel_port
        assert ports[1] > 0 and not refused(ports[1])
    finally:
        loop.run(cloud.stop(0))
        loop.close()
    assert refused(ports[0]) and refused(ports[1])
    # another replica leads at once, not after the 600 s lease
    registry = Registry(db)
    try:
        assert SchedulerLeader(registry, 60.0, holder="another replica").renew()
    finally:
        registry.close()


@pytest.mark.parametrize("grace, drain_s, calls_s", [(None, 5.0, 0.5), (2.0, 2.0, 0.5), (0.2, 0.2, 0.2)])
def test_a_stops_grace_bounds_the_drain_and_other_calls_get_at_most_half_a_second(tmp_path: Path, grace: float | None,
                                                                                 drain_s: float, calls_s: float) -> None:
    """The edges' streams get the whole grace (5 s when none is given: they are answered, not cut);
    the other calls in flight at most 0.5 s of it."""
    loop = LoopThread()
    cloud = loop.run(start_cloud(replace(CloudConfig(), db=str(tmp_path / "c.sqlite3"), port=0, metrics_port=-1)))
    given: list[tuple[str, float | None]] = []
    drain, stop = cloud.servicer.drain, cloud.server.stop

    async def drain_recorded(timeout_s: float) -> int:
        given.append(("drain", timeout_s))
        return await drain(timeout_s)

    async def stop_recorded(grace_s: float | None) -> None:
        given.append(("calls", grace_s))
        await stop(grace_s)

    cloud.servicer.drain, cloud.server.stop = drain_recorded, stop_recorded
    try:
        loop.run(cloud.stop() if grace is None else cloud.stop(grace))
    finally:
        loop.close()
    assert given == [("drain", drain_s), ("calls", calls_s)]


@pytest.mark.parametrize("boundary, split_edge", [(-1, 5), (0, 2), (4, 4)])  # digits_cnn has 6 blocks; the device runs 2
def test_the_edge_boundary_option_sets_the_blocks_an_edge_runs(tmp_path: Path, boundary: int, split_edge: int) -> None:
    t = start_tiers(tmp_path, cloud_cfg=CloudConfig(edge_boundary=boundary))
    try:
        assert t.register(split=2).split_edge == split_edge
    finally:
        stop_tiers(t)


def test_the_placement_options_reach_the_placement(tmp_path: Path) -> None:
    from edge_node.service import EdgeConfig

    t = start_tiers(tmp_path, cloud_cfg=CloudConfig(placement_method="lf", placement_activation_cost=7.5),
                    edge_cfg=EdgeConfig(position="40.75,-74.0"))  # no activation cost of its own: the cloud's default
    try:
        a = t.register(split=2)
        t.cloud_stub.ReportLocation(pb.LocationReport(device_id=a.device_id, token=a.token, position=pb.Position(lat=40.7, lon=-74.0)),
                                    timeout=30)  # a device with a position: the configured method places it
        scheduler = pb_grpc.SchedulerStub(t.cloud_channel)
        report = scheduler.Place(pb.PlaceRequest(), timeout=60)
        assert report.method == "lf"
        assert [e.activation_cost for e in report.edges] == [7.5]
    finally:
        stop_tiers(t)


def test_the_frame_limits_reach_the_frames(tmp_path: Path) -> None:
    """``max_batch`` and ``max_tensor_bytes`` as configured, not the defaults: a two-image frame is
    refused in band naming max_batch; one over max_tensor_bytes is not even taken in (the cloud's
    receive cap follows the frame limit), and one that fits the cap only as float16 is refused in
    band (the limit counts its float32 size)."""
    from ecd import zoo
    from ecd.manifest import load_heldout
    from harness import frame_for

    m = zoo.load_manifest("digits_cnn")
    split = max(range(m.n_blocks), key=m.activation_bytes)  # the largest activation the device may send
    x = m.input.preprocess(load_heldout(m).images[:2])

    def refusal(cfg: CloudConfig, name: str, encoding: int = pb.FLOAT32) -> tuple[int, str]:
        (tmp_path / name).mkdir()
        t = start_tiers(tmp_path / name, cloud_cfg=cfg)
        try:
            f = frame_for(t.register(split=split), m, x, 1, encoding)
            f.split_edge = split
            try:
                (r,) = list(t.cloud_stub.Stream(iter([f]), timeout=60))
            except grpc.RpcError as e:
                return e.code().value[0], e.details()
            return r.error.code, r.error.message
        finally:
            stop_tiers(t)

    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert refusal(CloudConfig(max_batch=1), "batch") == (exhausted, "tensor.shape[0]: a batch of 2 exceeds the limit of 1 (max_batch)")
    code, details = refusal(CloudConfig(max_tensor_bytes=m.activation_bytes(split)), "bytes")
    assert code == exhausted and "Received message larger than max" in details
    code, details = refusal(CloudConfig(max_tensor_bytes=m.activation_bytes(split)), "float16", pb.FLOAT16)
    assert code == exhausted and details.endswith(f"exceed the limit of {m.activation_bytes(split)} bytes (max_tensor_bytes)")


def test_the_timing_and_quota_options_reach_the_parts_that_use_them(tmp_path: Path) -> None:
    """The options whose effect the core's own tests pin (tests/cloud_server/test_core*.py), as set,
    not their defaults; the schedulers' series on the registry the metrics port serves."""
    from ecd.batching import BatchingConfig

    cfg = replace(CloudConfig(), db=str(tmp_path / "c.sqlite3"), port=0, metrics_port=-1, edge_timeout_s=7.0, device_lease_s=77.0,
                  leader_lease_s=9.0, placement_check_s=1.5, placement_debounce_s=0.25, batch_max_frames=5, batch_max_delay_ms=20.0,
                  devices_per_certificate=3, enrol_code_ttl_s=123.0, registrations_per_s=2.0, locations_per_s=3.0)
    loop = LoopThread()
    cloud = loop.run(start_cloud(cfg))
    try:
        core = cloud.core
        assert (core.edges.timeout_s, core.leases.lease_s, core.leader.ttl_s, core.placement.debounce_s) == (7.0, 77.0, 9.0, 0.25)
        assert {core.models.served(m).batcher.config for m in core.models} == {BatchingConfig(5, 0.02)}
        assert (core.devices.per_certificate, core.enrolment.ttl_s) == (3, 123.0)
        assert cloud.servicer.monitor.every_s == 1.5
        limits = cloud.servicer.limits  # bursts: five times the registrations' rate, ten times the locations'
        assert (limits.registrations.per_s, limits.registrations.burst, limits.locations.per_s, limits.locations.burst) == (2.0, 10.0, 3.0, 30.0)
    finally:
        loop.run(cloud.stop(0))
        loop.close()


@pytest.mark.parametrize("peers, status", [(("::1",), 200), (("127.0.0.1",), 403)])
def test_the_operator_view_on_ipv6_loopback_checks_its_callers_as_ipv6_peers(tmp_path: Path, peers: tuple, status: int) -> None:
    import httpx

    loop = LoopThread()
    cloud = loop.run(start_cloud(replace(CloudConfig(), db=str(tmp_path / "c.sqlite3"), port=0, metrics_port=-1, panel_port=0,
                                         panel_host="::1", operator_peers=peers)))
    try:
        r = httpx.get(f"http://[::1]:{cloud.panel_port}/api/overview", timeout=10)
        assert r.status_code == status
        if status == 403:
            assert r.json()["error"] == "operator: calls from ::1 are not taken here (operator_peers)"
    finally:
        loop.run(cloud.stop(0))
        loop.close()


def test_a_view_beyond_loopback_is_served_only_when_plaintext_is_forced(tmp_path: Path) -> None:
    from ecd.errors import ConfigError

    loop = LoopThread()
    try:
        cfg = replace(CloudConfig(), db=str(tmp_path / "c.sqlite3"), port=0, metrics_port=-1, panel_port=0, panel_host="0.0.0.0")
        with pytest.raises(ConfigError) as e:
            loop.run(start_cloud(cfg))
        assert str(e.value) == ("panel_host: 0.0.0.0 is not a loopback address and the operator view is plain HTTP; "
                                "keep it on loopback (reach it over an SSH tunnel) or force it with --insecure")
        cloud = loop.run(start_cloud(replace(cfg, insecure=True)))
        try:
            assert cloud.panel_port > 0 and not refused(cloud.panel_port)
        finally:
            loop.run(cloud.stop(0))
    finally:
        loop.close()
