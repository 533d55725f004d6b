"""What ``start_edge`` makes of the node's options (edge_node.service), over a real cloud and edge on
loopback: the registration the cloud stores (advertised address, capacity, position, activation
cost), the limits the node enforces, where partitions are kept, the metrics and health ports,
reflection, and a bad position refused before anything starts. The mutation gate found these
options dropped or swapped on their way to the core, the server or the cloud, with no test noticing."""

from __future__ import annotations

import tempfile
import urllib.request
from dataclasses import replace
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from harness import Tiers, start_tiers, stop_tiers
from prometheus_client.parser import text_string_to_metric_families

from ecd.batching import BatchingConfig
from ecd.config import MiB
from ecd.errors import ConfigError
from ecd.transport.rpc import LoopThread
from ecd.v1 import ecd_pb2 as pb
from edge_node.service import EdgeConfig, start_edge


def registered(t: Tiers):
    (e,) = [e for e in t.cloud.registry.edges() if e.edge_id == t.edge.edge_id]
    return e


def services(channel: grpc.Channel) -> list[str]:
    (reply,) = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    return sorted(s.name for s in reply.list_services_response.service)


def frame_counter_services(port: int) -> set[str]:
    """The ``service`` labels of the frame counters the metrics port serves (they exist from the start)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {s.labels.get("service", "") for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "ecd_frames_total"}


def listening_on(port: int) -> set[str]:
    return {c.laddr.ip for c in psutil.Process().net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


@pytest.fixture
def tiers_with_options(tmp_path: Path):
    cfg = replace(EdgeConfig(), capacity=37.5, position="52.5,13.25", activation_cost=4.0, max_queue=7, max_tensor_bytes=12345,
                  max_batch=5, max_stream_frames=9, batch_max_frames=3, batch_max_delay_ms=250.0, max_message_bytes=MiB,
                  health_port=0, reflection=False, advertise="127.0.0.1:7000")
    t = start_tiers(tmp_path, edge_cfg=cfg)
    yield t
    stop_tiers(t)


def test_the_cloud_stores_the_registration_the_options_give(tiers_with_options: Tiers) -> None:
    t = tiers_with_options
    e = registered(t)
    assert (e.endpoint, e.capacity, e.lat, e.lon, e.activation_cost) == ("127.0.0.1:7000", 37.5, 52.5, 13.25, 4.0)
    assert t.edge.endpoint == "127.0.0.1:7000"
    assert t.edge.core.edge_id == t.edge.edge_id  # stamped on every result


def test_the_node_enforces_the_limits_the_options_give(tiers_with_options: Tiers, tmp_path: Path) -> None:
    core = tiers_with_options.edge.core
    assert (core.link.queue.max_size, core.max_tensor_bytes, core.max_batch, core.max_stream_frames) == (7, 12345, 5, 9)
    assert core.max_message_bytes == MiB
    assert core.batching == BatchingConfig(3, 0.25)  # the delay option is in milliseconds
    assert core.model_dir == tmp_path / "edge-models" and tiers_with_options.edge.tmpdir is None
    # a message over max_message_bytes is refused by the server itself
    big = pb.Frame(frame_id=1, tensor=pb.Tensor(data=b"\0" * (MiB + 1024)))
    with pytest.raises(grpc.RpcError) as e:
        list(tiers_with_options.edge_stub.Stream(iter([big]), timeout=10))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_health_port_and_reflection_follow_the_options(tiers_with_options: Tiers) -> None:
    t = tiers_with_options
    assert t.edge.server.health_port > 0  # 0 = any free port
    with pytest.raises(grpc.RpcError) as e:
        services(t.edge_channel)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED  # reflection off


def test_the_defaults_register_the_bound_address_serve_reflection_and_metrics(tiers: Tiers) -> None:
    assert registered(tiers).endpoint == f"127.0.0.1:{tiers.edge.port}" == tiers.edge.endpoint  # host:bound port
    assert (registered(tiers).lat, registered(tiers).activation_cost) == (None, 0.0)  # no position given
    assert "ecd.v1.EdgeNode" in services(tiers.edge_channel)
    assert tiers.edge.server.health_port == -1
    assert tiers.edge.metrics_port > 0  # metrics_port 0: any free port
    assert frame_counter_services(tiers.edge.metrics_port) == {"edge"}
    assert listening_on(tiers.edge.metrics_port) == {"127.0.0.1"}  # the node's host, not every interface


def test_without_a_model_dir_partitions_go_to_a_temporary_folder_removed_at_stop(tiers: Tiers, tmp_path: Path, monkeypatch) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    loop = LoopThread()
    try:
        edge = loop.run(start_edge(replace(EdgeConfig(), cloud=tiers.cloud_target, metrics_port=-1)))
        try:
            (made,) = list(tmp.iterdir())
            assert made.name.startswith("ecd-edge-") and edge.core.model_dir == made and made.is_dir()
            assert edge.metrics_port == -1  # off
        finally:
            loop.run(edge.stop(0))
        assert not made.exists()
        edge = loop.run(start_edge(replace(EdgeConfig(), cloud=tiers.cloud_target, metrics_port=-1, model_dir=str(tmp_path / "m"))))
        loop.run(edge.stop(0))
        assert edge.core.model_dir == tmp_path / "m" and list(tmp.iterdir()) == []  # a model_dir given: no temporary folder
    finally:
        loop.close()


def test_a_bad_position_is_refused_before_anything_starts() -> None:
    loop = LoopThread()
    try:
        with pytest.raises(ConfigError) as e:
            loop.run(start_edge(replace(EdgeConfig(), cloud="127.0.0.1:1", position="north")))
        assert str(e.value).startswith("position: ")
    finally:
        loop.close()
