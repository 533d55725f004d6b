"""Identities bound to certificates, over real mutual TLS: a device's token is good only over the
device certificate it was issued to, and a revoked device's certificate cannot register again."""

from __future__ import annotations

from dataclasses import replace

import grpc
import pytest

from cloud_server.config import CloudConfig
from cloud_server.scheduler_service import SchedulerClient
from cloud_server.service import start_cloud
from ecd import certs
from ecd.errors import PeerError
from ecd.transport import tls
from ecd.transport.rpc import LoopThread, wait_healthy
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("tls") / "certs"
    certs.init(folder, certs.default_holders(edges=1, devices=3))
    loop = LoopThread()
    running = loop.run(start_cloud(replace(CloudConfig(), db=str(folder.parent / "cloud.sqlite3"), metrics_port=-1,
                                           tls_dir=str(folder), operator_peers=("192.0.2.1",))))
    wait_healthy(f"127.0.0.1:{running.port}", tls=tls.load(str(folder), "operator"), server_role="cloud")
    yield running, folder
    loop.run(running.stop(0))
    loop.close()


def stub(cloud, who: str, service=pb_grpc.CloudServerStub):
    running, folder = cloud
    return service(tls.channel(f"127.0.0.1:{running.port}", tls.load(str(folder), who), "cloud"))


def register(cloud, who: str) -> pb.Assignment:
    """``who`` registers a device (an edge node, never dialled here, registers first: devices need one alive)."""
    stub(cloud, "edge-1").RegisterEdge(pb.RegisterEdgeRequest(endpoint="127.0.0.1:50999", capacity=4.0), timeout=10)
    return stub(cloud, who).RegisterDevice(pb.RegisterDeviceRequest(
        device_name=who, profile="pi4", radio="wifi", model_id="digits_cnn", split_device=2,
        preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5), encoding=pb.FLOAT32), timeout=30)


def test_a_token_is_good_only_over_the_certificate_it_was_issued_to(cloud) -> None:
    a = register(cloud, "device-1")
    ask = pb.GetAssignmentRequest(device_id=a.device_id, token=a.token)
    assert stub(cloud, "device-1").GetAssignment(ask, timeout=10).device_id == a.device_id
    with pytest.raises(grpc.RpcError) as stolen:  # another device's certificate presenting the token
        stub(cloud, "device-2").GetAssignment(ask, timeout=10)
    assert stolen.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert stolen.value.details() == f"token: device {a.device_id}'s token was issued to another device certificate"
    forged = pb.GetAssignmentRequest(device_id=a.device_id, token=a.token, holder="device-1")  # a field only edges may set
    with pytest.raises(grpc.RpcError) as claimed:
        stub(cloud, "device-2").GetAssignment(forged, timeout=10)
    assert claimed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as moved:
        stub(cloud, "device-2").ReportLocation(pb.LocationReport(device_id=a.device_id, token=a.token,
                                                                 position=pb.Position(lat=40.7, lon=-74.0)), timeout=10)
    assert moved.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_revoked_devices_certificate_cannot_register_again(cloud) -> None:
    a = register(cloud, "device-3")
    stub(cloud, "operator", pb_grpc.SchedulerStub).RevokeDevice(pb.RevokeRequest(device_id=a.device_id), timeout=10)
    with pytest.raises(grpc.RpcError) as again:
        register(cloud, "device-3")
    assert again.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert again.value.details().startswith("device certificate 'device-3' was revoked: it cannot register again")
    assert register(cloud, "device-2").device_id  # other devices still register


def test_under_tls_the_operators_certificate_is_what_counts_not_its_address(cloud) -> None:
    """operator_peers (here one far-away address) is for plaintext clouds: over mutual TLS the
    operator's certificate admits its calls from anywhere, through the operator's client too."""
    running, folder = cloud
    a = register(cloud, "device-1")
    client = SchedulerClient(f"127.0.0.1:{running.port}", timeout_s=30, tls=tls.load(str(folder), "operator"))
    try:
        devices, floor = client.reputations()
        assert a.device_id in {d.device_id for d in devices} and floor > 0
        client.revoke(a.device_id)
        with pytest.raises(PeerError, match=rf"^NOT_FOUND: device_id: 'none-such' is not registered \(cloud 127\.0\.0\.1:{running.port}\)$") as e:
            client.revoke("none-such")
        assert e.value.status == "NOT_FOUND"
    finally:
        client.close()
    with pytest.raises(grpc.RpcError) as revoked:
        stub(cloud, "device-1").GetAssignment(pb.GetAssignmentRequest(device_id=a.device_id, token=a.token), timeout=10)
    assert revoked.value.code() == grpc.StatusCode.UNAUTHENTICATED
