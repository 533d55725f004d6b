"""Which certificate the cloud's handlers pass on (cloud_server.service), over real mutual TLS: a
device's token is good only over the device certificate it was registered with, an edge node asks
only about devices assigned to it and names the certificate a frame came over, an edge certificate
heartbeats and deregisters only its own edge, and registrations are counted per certificate. The
policy alone (tests/integration/test_security.py) lets each of these calls through; what the
handler then passes to the core is what is pinned here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import grpc
import pytest

from secure_tiers import SecureTiers, start_secure_tiers, stop_secure_tiers

from ecd.transport import tls
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc
from edge_node.service import RunningEdge


@dataclass
class Secure:
    tiers: SecureTiers
    a: pb.Assignment  # device A, registered over device-1's certificate

    @property
    def edge(self) -> RunningEdge:
        return self.tiers.edge

    def stub(self, holder: str) -> tuple[grpc.Channel, pb_grpc.CloudServerStub]:
        ch = tls.channel(f"127.0.0.1:{self.tiers.cloud.port}", tls.load(str(self.tiers.folder), holder), "cloud")
        return ch, pb_grpc.CloudServerStub(ch)

    def call(self, holder: str, rpc: Callable[[pb_grpc.CloudServerStub], object]) -> tuple[str, str]:
        """(status name, details) of ``rpc`` called over ``holder``'s certificate."""
        ch, stub = self.stub(holder)
        with ch:
            try:
                rpc(stub)
            except grpc.RpcError as e:
                return e.code().name, e.details()
        return "OK", ""


def registration(name: str) -> pb.RegisterDeviceRequest:
    return pb.RegisterDeviceRequest(device_name=name, profile="pi4", radio="wifi", model_id="digits_cnn", split_device=2,
                                    preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5), encoding=pb.FLOAT32)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory):
    # 0.2 registrations a second per caller: a burst of one (five times the rate)
    tiers = start_secure_tiers(tmp_path_factory.mktemp("tls"), registrations_per_s=0.2)
    s = Secure(tiers, pb.Assignment())
    ch, stub = s.stub("device-1")
    with ch:
        s.a = stub.RegisterDevice(registration("A"), timeout=30)
    yield s
    stop_secure_tiers(tiers)


def device_calls(a: pb.Assignment) -> dict[str, Callable[[pb_grpc.CloudServerStub], object]]:
    return {
        "UpdatePreferences": lambda s: s.UpdatePreferences(pb.UpdatePreferencesRequest(
            device_id=a.device_id, token=a.token, preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5), split_device=2), timeout=30),
        "GetAssignment": lambda s: s.GetAssignment(pb.GetAssignmentRequest(device_id=a.device_id, token=a.token), timeout=30),
        "ReportLocation": lambda s: s.ReportLocation(pb.LocationReport(device_id=a.device_id, token=a.token,
                                                                       position=pb.Position(lat=40.7, lon=-74.0)), timeout=30),
        "WatchAssignment": lambda s: next(s.WatchAssignment(pb.GetAssignmentRequest(device_id=a.device_id, token=a.token), timeout=30)),
    }


def test_a_token_is_good_only_over_the_device_certificate_it_was_registered_with(secure: Secure) -> None:
    calls = device_calls(secure.a)
    assert {name: secure.call("device-1", rpc) for name, rpc in calls.items()} == {name: ("OK", "") for name in calls}
    stolen = ("UNAUTHENTICATED", f"token: device {secure.a.device_id}'s token was issued to another device certificate")
    assert {name: secure.call("device-2", rpc) for name, rpc in calls.items()} == {name: stolen for name in calls}


def test_an_edge_asks_only_about_its_own_devices_naming_the_certificate_a_frame_came_over(secure: Secure) -> None:
    a = secure.a

    def ask(holder: str = "") -> Callable[[pb_grpc.CloudServerStub], object]:
        return lambda s: s.GetAssignment(pb.GetAssignmentRequest(device_id=a.device_id, token=a.token, holder=holder), timeout=30)

    def relay(s: pb_grpc.CloudServerStub) -> object:
        return s.UpdatePreferences(pb.UpdatePreferencesRequest(
            device_id=a.device_id, token=a.token, preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5), split_device=2), timeout=30)

    assert secure.call("edge-1", ask()) == ("OK", "")  # no certificate named: the token alone
    assert secure.call("edge-1", ask("device-1")) == ("OK", "")
    assert secure.call("edge-1", ask("device-2")) == (
        "UNAUTHENTICATED", f"token: device {a.device_id}'s token was issued to another device certificate")
    assert secure.call("edge-1", relay) == ("OK", "")
    not_yours = ("PERMISSION_DENIED", f"device_id: device {a.device_id} is not assigned to this edge node")
    assert secure.call("edge-2", ask()) == not_yours
    assert secure.call("edge-2", relay) == not_yours


def test_an_edge_certificate_heartbeats_and_deregisters_only_its_own_edge(secure: Secure) -> None:
    edge_id, endpoint = secure.edge.edge_id, f"127.0.0.1:{secure.edge.port}"
    others = ("PERMISSION_DENIED", f"edge_id: {edge_id} belongs to another edge node")
    assert secure.call("edge-2", lambda s: s.Heartbeat(pb.EdgeHeartbeat(edge_id=edge_id, load=0), timeout=30)) == others
    assert secure.call("edge-2", lambda s: s.DeregisterEdge(pb.DeregisterEdgeRequest(edge_id=edge_id), timeout=30)) == others
    assert secure.call("edge-2", lambda s: s.RegisterEdge(pb.RegisterEdgeRequest(endpoint=endpoint, capacity=10), timeout=30)) == (
        "PERMISSION_DENIED", f"endpoint: {endpoint} is registered by another edge node")
    assert secure.call("edge-1", lambda s: s.Heartbeat(pb.EdgeHeartbeat(edge_id=edge_id, load=0), timeout=30)) == ("OK", "")


def test_registrations_are_counted_per_certificate(secure: Secure) -> None:
    register = lambda s: s.RegisterDevice(registration("B"), timeout=30)  # noqa: E731
    assert secure.call("device-2", register) == ("OK", "")  # its own bucket, whatever device-1 spent
    assert secure.call("device-2", register) == (
        "RESOURCE_EXHAUSTED", "registrations: more than 0.2 a second (burst 1) from device:device-2; retry later")


def test_a_frame_relayed_over_an_edge_certificate_is_answered_only_for_that_edges_devices(secure: Secure) -> None:
    from harness import frame_for

    from ecd import zoo
    from ecd.manifest import load_heldout

    m = zoo.load_manifest("digits_cnn")
    frame = frame_for(secure.a, m, m.input.preprocess(load_heldout(m).images[:1]), 1)
    frame.split_edge = frame.split_device  # the edge ran none of the blocks

    def relayed(holder: str) -> pb.Result:
        ch, stub = secure.stub(holder)
        with ch:
            (result,) = list(stub.Stream(iter([frame]), timeout=30))
        return result

    assert not relayed("edge-1").HasField("error")  # device A's edge
    refused = relayed("edge-2")
    assert refused.error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert refused.error.message == f"device_id: device {secure.a.device_id} is not assigned to this edge node"
