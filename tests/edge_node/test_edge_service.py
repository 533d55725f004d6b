"""The edge's gRPC side (edge_node.service), over a real cloud and edge on loopback: stopping (a
node that leaves tells the cloud, one stopped for a restart does not, a second stop does nothing),
a draining node's refusal, and the cloud client's errors. The mutation gate found no test noticing
these broken."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from harness import start_tiers, stop_tiers

from ecd.errors import AuthenticationError, UnavailableError
from ecd.types import PartitionRequest
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc
from edge_node.service import GrpcCloudClient


def last_seen(tiers, edge_id: str) -> float:
    (e,) = [e for e in tiers.cloud.registry.edges() if e.edge_id == edge_id]
    return e.last_seen_unix


@pytest.mark.parametrize("leave", [True, False])
def test_a_node_that_leaves_tells_the_cloud_and_a_second_stop_does_nothing(tmp_path: Path, leave: bool) -> None:
    t = start_tiers(tmp_path)
    try:
        edge_id = t.edge.edge_id
        assert last_seen(t, edge_id) > 0  # alive
        t.loop.run(t.edge.stop(0, leave=leave))
        assert t.edge.stopped
        assert (last_seen(t, edge_id) == 0) == leave  # no longer alive to the cloud only when it left
        assert all(task.done() for task in t.edge.tasks)  # the cloud link and the heartbeat are gone
        with pytest.raises(grpc.RpcError) as e:
            list(pb_grpc.EdgeNodeStub(t.edge_channel).Stream(iter([pb.Frame(frame_id=1)]), timeout=5))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE  # no longer serving
        t.loop.run(t.edge.stop(0, leave=True))  # does nothing: in particular, no late deregistration
        assert (last_seen(t, edge_id) == 0) == leave
    finally:
        t.cloud_channel.close()
        t.edge_channel.close()
        t.loop.run(t.cloud.stop(0))
        t.loop.close()


def test_a_draining_node_refuses_a_new_stream_with_unavailable_naming_why(tmp_path: Path) -> None:
    t = start_tiers(tmp_path)
    try:
        t.loop.run(t.edge.core.drain(0))
        with pytest.raises(grpc.RpcError) as e:
            list(pb_grpc.EdgeNodeStub(t.edge_channel).Stream(iter([pb.Frame(frame_id=1)]), timeout=5))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert e.value.details() == "edge: this edge node is shutting down; ask the cloud for your assignment"
    finally:
        stop_tiers(t)


def test_the_cloud_client_turns_the_clouds_refusals_into_runtime_errors(tmp_path: Path) -> None:
    """A token the cloud does not know: AuthenticationError in the cloud's words; a cloud that
    cannot be reached: UnavailableError naming what was asked and the status."""
    t = start_tiers(tmp_path)
    a = t.register(split=2)
    target = f"127.0.0.1:{t.cloud.port}"

    async def ask(token: str, partition: bool = False) -> str:
        async with grpc.aio.insecure_channel(target) as ch:
            client = GrpcCloudClient(pb_grpc.CloudServerStub(ch))
            try:
                if partition:
                    await anext(client.fetch_partition(PartitionRequest("digits_cnn", "v9", 0, 1)))
                else:
                    return (await client.get_assignment(a.device_id, token)).token
            except (AuthenticationError, UnavailableError) as e:
                return f"{type(e).__name__}: {e}"
        return "answered"

    try:
        assert t.loop.run(ask(a.token)) == a.token
        assert t.loop.run(ask("not-" + a.token)) == f"AuthenticationError: token: unknown device token for device_id {a.device_id!r}"
        t.loop.run(t.edge.stop(0))
        t.loop.run(t.cloud.stop(0))
        assert t.loop.run(ask(a.token)) == "UnavailableError: cloud: cannot check the device's assignment (UNAVAILABLE)"
        said = t.loop.run(ask(a.token, partition=True))
        assert said.startswith("UnavailableError: model: cannot fetch digits_cnn@v9 from the cloud (UNAVAILABLE: "), said
    finally:
        t.cloud_channel.close()
        t.edge_channel.close()
        t.loop.close()


def test_a_node_whose_cloud_is_gone_still_stops(tmp_path: Path) -> None:
    """Leaving tells the cloud if it can: a cloud already gone (UNAVAILABLE) does not stop the stop."""
    t = start_tiers(tmp_path)
    try:
        t.loop.run(t.cloud.stop(0))
        t.loop.run(t.edge.stop(0, leave=True))
        assert t.edge.stopped and all(task.done() for task in t.edge.tasks)
    finally:
        t.cloud_channel.close()
        t.edge_channel.close()
        t.loop.close()
