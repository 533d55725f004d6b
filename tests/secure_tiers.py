"""A cloud and an edge node over mutual TLS on loopback, for tests: a fresh certificate folder
(two edge and two device holders, an operator), port 0, no metrics port."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cloud_server.config import CloudConfig
from cloud_server.service import RunningCloud, start_cloud
from ecd import certs
from ecd.transport import tls
from ecd.transport.rpc import LoopThread, wait_healthy
from edge_node.service import EdgeConfig, RunningEdge, start_edge


@dataclass
class SecureTiers:
    loop: LoopThread
    cloud: RunningCloud
    edge: RunningEdge  # serving with edge-1's certificate
    folder: Path  # the certificates


def start_secure_tiers(tmp: Path, **cloud_options: Any) -> SecureTiers:
    folder = tmp / "certs"
    certs.init(folder, certs.default_holders(edges=2, devices=2))
    loop = LoopThread()
    cloud = loop.run(start_cloud(replace(CloudConfig(), db=str(tmp / "cloud.sqlite3"), metrics_port=-1, tls_dir=str(folder),
                                         **cloud_options)))
    edge = loop.run(start_edge(replace(EdgeConfig(), cloud=f"127.0.0.1:{cloud.port}", metrics_port=-1, tls_dir=str(folder),
                                       tls_name="edge-1", model_dir=str(tmp / "edge-models"), heartbeat_s=0.3)))
    ca_only = tls.load(str(folder), "operator")
    wait_healthy(f"127.0.0.1:{cloud.port}", tls=ca_only, server_role="cloud")
    wait_healthy(f"127.0.0.1:{edge.port}", tls=ca_only, server_role="edge")
    return SecureTiers(loop, cloud, edge, folder)


def stop_secure_tiers(s: SecureTiers) -> None:
    s.loop.run(s.edge.stop(0, leave=False))
    s.loop.run(s.cloud.stop(0))
    s.loop.close()
