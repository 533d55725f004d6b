"""Stopping an edge node (edge_node.service.RunningEdge.stop), over a real cloud and edge on
loopback: a node that leaves tells the cloud (placement then moves its devices away), one stopped
for a restart does not, and stopping a stopped node does nothing. The mutation gate found no test
noticing a stop that skipped the cloud."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from harness import start_tiers

from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc


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
