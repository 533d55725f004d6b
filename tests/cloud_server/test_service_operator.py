"""The operator's Scheduler calls on a plaintext cloud, over real gRPC on loopback: with no client
certificates there are no roles, so the cloud takes them only from the addresses in
``operator_peers`` (cloud_server.scheduler_service.operator_check); every other caller is refused
PERMISSION_DENIED naming the setting, before the call does anything. Under mutual TLS the policy
decides instead (tests/integration/test_security.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import grpc
import pytest

from cloud_server.config import CloudConfig
from cloud_server.service import start_cloud
from ecd.transport.rpc import LoopThread, wait_healthy
from ecd.transport.auth import POLICY
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc

CALLS: dict[str, Callable[[pb_grpc.SchedulerStub], object]] = {
    "Place": lambda s: s.Place(pb.PlaceRequest(), timeout=30),
    "GetPlacement": lambda s: s.GetPlacement(pb.GetPlacementRequest(), timeout=10),
    "CreateCampaign": lambda s: s.CreateCampaign(pb.CampaignSpec(
        name="far away", grid=pb.Grid(south_west=pb.Position(lat=10, lon=10), north_east=pb.Position(lat=11, lon=11), rows=1, cols=1),
        slots=2, reporters=[1], method="tapp", theta=1.0), timeout=30),
    "GetCampaign": lambda s: s.GetCampaign(pb.CampaignRequest(campaign_id="none-such"), timeout=10),
    "ListReputations": lambda s: s.ListReputations(pb.ReputationsRequest(), timeout=10),
    "SelectSite": lambda s: s.SelectSite(pb.SiteRequest(event="fire", level=5, budget=5, position=pb.Position(lat=40.7, lon=-74.0)),
                                         timeout=10),
    "RevokeDevice": lambda s: s.RevokeDevice(pb.RevokeRequest(device_id="none-such"), timeout=10),
}


# the operator's calls on the CloudServer service (the policy's operator-only rows there)
CLOUD_CALLS: dict[str, Callable[[pb_grpc.CloudServerStub], object]] = {
    "AddHead": lambda s: s.AddHead(pb.HeadSpec(model_id="none-such", name="h", labels=["a"], weight=[0.0]), timeout=10),
}


def test_every_scheduler_rpc_is_in_the_table() -> None:
    assert set(CALLS) == {m.name for m in pb.DESCRIPTOR.services_by_name["Scheduler"].methods}
    assert {f"/ecd.v1.CloudServer/{name}" for name in CLOUD_CALLS} == {
        method for method, roles in POLICY.items() if method.startswith("/ecd.v1.CloudServer/") and roles == {"operator"}}


def outcomes(tmp_path: Path, peers: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """Each Scheduler RPC called from 127.0.0.1 on a plaintext cloud taking operator calls from
    ``peers``: (status name, details) — OK, or whatever the handler answered, or the refusal."""
    loop = LoopThread()
    cloud = loop.run(start_cloud(replace(CloudConfig(), port=0, db=str(tmp_path / "cloud.sqlite3"), metrics_port=-1,
                                         operator_peers=peers)))
    target = f"127.0.0.1:{cloud.port}"
    try:
        wait_healthy(target)
        got = {}
        with grpc.insecure_channel(target) as ch:
            for stub, calls in ((pb_grpc.SchedulerStub(ch), CALLS), (pb_grpc.CloudServerStub(ch), CLOUD_CALLS)):
                for name, call in calls.items():
                    try:
                        call(stub)
                        got[name] = ("OK", "")
                    except grpc.RpcError as e:
                        got[name] = (e.code().name, e.details())
        return got
    finally:
        loop.run(cloud.stop(0))
        loop.close()


@pytest.mark.parametrize("peers", [("127.0.0.1", "::1"), ("127.0.0.1",), ("any",), ("192.0.2.1", "any")])
def test_an_operator_peer_is_served(tmp_path: Path, peers: tuple[str, ...]) -> None:
    got = outcomes(tmp_path, peers)
    assert all(code != "PERMISSION_DENIED" for code, _ in got.values()), got
    # each call reached its handler, which answered from the (empty) cloud's state
    assert {name: code for name, (code, _) in got.items()} == {
        "Place": "FAILED_PRECONDITION", "GetPlacement": "FAILED_PRECONDITION", "CreateCampaign": "FAILED_PRECONDITION",
        "GetCampaign": "NOT_FOUND", "ListReputations": "OK", "SelectSite": "FAILED_PRECONDITION", "RevokeDevice": "NOT_FOUND",
        "AddHead": "FAILED_PRECONDITION"}
    assert got["RevokeDevice"][1] == "device_id: 'none-such' is not registered"


@pytest.mark.parametrize("peers", [("::1",), ("192.0.2.1",), ()])
def test_a_caller_not_in_operator_peers_is_refused_every_scheduler_rpc(tmp_path: Path, peers: tuple[str, ...]) -> None:
    got = outcomes(tmp_path, peers)
    assert got == {name: ("PERMISSION_DENIED", "operator: calls from 127.0.0.1 are not taken here (operator_peers)")
                   for name in [*CALLS, *CLOUD_CALLS]}
