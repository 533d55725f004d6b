"""An edge node and a device agent given two cloud replicas (``--cloud A,B``, one PostgreSQL
registry) go on through the loss of the replica they use: the edge's stream to the cloud moves to
the other replica and every frame is answered once, without an error."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from cloud_server.config import CloudConfig
from cloud_server.service import start_cloud
from device_agent.agent import AgentConfig, DeviceAgent
from device_agent.sources import heldout
from ecd.errors import ConfigError
from ecd.transport.rpc import LoopThread, wait_healthy
from ecd.transport.targets import client_target
from edge_node.service import EdgeConfig, start_edge
from harness import Run

pytestmark = pytest.mark.timeout(180)


def test_addresses_are_checked_one_by_one_and_listed_in_order() -> None:
    assert client_target("127.0.0.1:7", None, False, "--cloud") == "127.0.0.1:7"  # one: dialled as written
    assert client_target("127.0.0.1:7, localhost:8", None, False, "--cloud") == "ipv4:127.0.0.1:7,127.0.0.1:8"
    assert client_target("[::1]:7,[::1]:8", None, False, "--cloud") == "ipv6:[::1]:7,[::1]:8"
    with pytest.raises(ConfigError, match=r"^--cloud: expected host:port, or several separated by commas, got 'x'$"):
        client_target("127.0.0.1:7,x", None, False, "--cloud")
    with pytest.raises(ConfigError, match=r"^--cloud: 192\.0\.2\.1 is not a loopback address, and plaintext is refused there"):
        client_target("127.0.0.1:7,192.0.2.1:8", None, False, "--cloud")


def test_the_edge_and_the_agent_go_on_through_the_loss_of_their_cloud_replica(postgres_url: str, tmp_path: Path) -> None:
    loop = LoopThread()
    cfg = replace(CloudConfig(), db=postgres_url, port=0, metrics_port=-1)
    clouds = [loop.run(start_cloud(cfg)) for _ in range(2)]
    for c in clouds:
        wait_healthy(f"127.0.0.1:{c.port}")
    both = f"127.0.0.1:{clouds[0].port},127.0.0.1:{clouds[1].port}"
    edge = loop.run(start_edge(replace(EdgeConfig(), cloud=both, metrics_port=-1, model_dir=str(tmp_path / "edge"), heartbeat_s=0.5)))
    agent = DeviceAgent(AgentConfig(cloud=both, split=2, fps=100.0, model_dir=str(tmp_path / "agent")))
    try:
        agent.connect()
        run = Run(agent, heldout("digits_cnn", 300))
        run.wait_answered(30)  # streaming through replica 0
        loop.run(clouds.pop(0).stop(0))  # the replica both use goes away mid-stream
        outcomes = run.join()
    finally:
        agent.close()
        loop.run(edge.stop(0))
        for c in clouds:
            loop.run(c.stop(0))
        loop.close()
    assert [o.frame_id for o in outcomes] == list(range(1, 301))
    assert all(o.result.ok for o in outcomes) and agent.status().errors == 0
