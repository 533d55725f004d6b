"""Two real cloud replicas on one PostgreSQL registry: exactly one exports ``ecd_scheduler_leader 1``,
an operator's placement at the other is refused naming the leader, and when the leader stops the
other leads at its next check, numbering placements on from the registry (unique, increasing)."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from cloud_server.config import CloudConfig
from cloud_server.scheduler_service import SchedulerClient
from cloud_server.service import RunningCloud
from ecd.errors import EcdError
from ecd.launch import _start, _stop
from ecd.v1 import ecd_pb2 as pb
from harness import cloud_replicas, wait_until
from ecd.v1 import ecd_pb2_grpc as pb_grpc


def leaders(clouds: list[RunningCloud]) -> list[float | None]:
    return [c.metrics.registry.get_sample_value("ecd_scheduler_leader") for c in clouds]


def test_one_leader_among_two_replicas_and_the_survivor_takes_over(postgres_url: str) -> None:
    # A lease far longer than the test: the survivor must lead because the leader gave the lease up,
    # and a leader whose renewal a loaded machine delays past its lease would take it back in a new
    # term, placing once more ("leader changed") and shifting the versions counted below.
    cfg = replace(CloudConfig(), db=postgres_url, port=0, metrics_port=-1, placement_check_s=0.1, leader_lease_s=30.0)
    with cloud_replicas(cfg) as (loop, clouds):
        clients = [SchedulerClient(f"127.0.0.1:{c.port}", timeout_s=30) for c in clouds]
        try:
            wait_until(lambda: sorted(leaders(clouds)) == [0.0, 1.0])
            lead = leaders(clouds).index(1.0)
            follow = 1 - lead
            with grpc.insecure_channel(f"127.0.0.1:{clouds[follow].port}") as ch:  # an edge, at the follower
                stub = pb_grpc.CloudServerStub(ch)
                edge_id = stub.RegisterEdge(pb.RegisterEdgeRequest(endpoint="127.0.0.1:50999", capacity=4.0), timeout=10).edge_id
                # the leader's own placement for the edge that joined first, not between the two counted below
                wait_until(lambda: clouds[lead].core.placement.current is not None)
                with pytest.raises(EcdError, match=rf"^FAILED_PRECONDITION: scheduler: this replica \({clouds[follow].core.leader.holder}\) "
                                                   rf"does not lead the schedulers; the leader is {clouds[lead].core.leader.holder}"):
                    clients[follow].place()
                versions = [clients[lead].place().version for _ in range(2)]
                stub.Heartbeat(pb.EdgeHeartbeat(edge_id=edge_id), timeout=10)
            assert versions == [versions[0], versions[0] + 1]
            wait_until(lambda: clouds[follow].core.placement.version == versions[-1])  # the follower follows
            assert clients[follow].placement().version == versions[-1]
            loop.run(clouds.pop(lead).stop(0))  # the leader stops: it gives the lease up
            clients.pop(lead).close()
            follow = 0
            wait_until(lambda: leaders(clouds)[follow] == 1.0, timeout_s=10)
            with grpc.insecure_channel(f"127.0.0.1:{clouds[follow].port}") as ch:
                pb_grpc.CloudServerStub(ch).Heartbeat(pb.EdgeHeartbeat(edge_id=edge_id), timeout=10)
            wait_until(lambda: clouds[follow].core.placement.version == versions[-1] + 1)  # a new leader places at once
            assert clouds[follow].core.placement.current.trigger == "leader changed"
            assert clients[follow].place().version == versions[-1] + 2
        finally:
            for client in clients:
                client.close()


def scrape(port: int, name: str) -> float | None:
    """One metric's value from a cloud process's Prometheus endpoint."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else None


def test_when_the_leader_is_killed_the_survivor_leads_within_the_lease(postgres_url: str, tmp_path: Path) -> None:
    """kill -9: no lease given up; the survivor takes it once it expires (5 s) at its next check (1 s)."""
    procs = []
    try:
        for k in range(2):
            procs.append(_start([sys.executable, "-m", "ecd_cli", "cloud-server", "--insecure", "--db", postgres_url, "--port", "0",
                                 "--metrics-port", "0"], tmp_path / f"cloud{k}.log"))
        wait_until(lambda: sorted(scrape(r["metrics_port"], "ecd_scheduler_leader") for _, r in procs) == [0.0, 1.0])
        lead = [scrape(r["metrics_port"], "ecd_scheduler_leader") for _, r in procs].index(1.0)
        survivor = procs[1 - lead][1]
        procs[lead][0].kill()
        procs[lead][0].wait(30)
        killed_at = time.monotonic()
        wait_until(lambda: scrape(survivor["metrics_port"], "ecd_scheduler_leader") == 1.0, timeout_s=15)
        took = time.monotonic() - killed_at
        assert 3.0 < took, f"{took:.1f} s: the survivor led before the killed leader's lease ran out"
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                _stop(proc, "cloud-server")
