"""Mutual TLS and the authorization policy, over real TLS connections: every RPC called by every
identity (the table in docs/explanation/security.md is this test's output), the fake-edge attack,
and the handshakes that must fail (plaintext, wrong CA, expired certificate).

The matrix is complete by construction: its RPCs are checked against the service descriptors
(ecd.v1, health, reflection), so an RPC added without a cell here fails, and each cell's expected
outcome is written out, so a policy row widened or narrowed fails too."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import grpc
import pytest

from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from cloud_server.heads import parity_head_weights
from cloud_server.config import CloudConfig
from cloud_server.service import start_cloud
from device_agent.agent import AgentConfig, DeviceAgent
from device_agent.sources import heldout
from ecd import certs, codec, zoo
from ecd.transport import tls
from ecd.errors import ConfigError
from ecd.manifest import load_heldout
from ecd.partition import Partition
from ecd.transport import serde
from ecd.transport.rpc import LoopThread
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc
from edge_node.service import EdgeConfig
from secure_tiers import start_secure_tiers, stop_secure_tiers

REPO = Path(__file__).resolve().parents[2]
SECURITY_PAGE = REPO / "docs" / "explanation" / "security.md"  # the site's security page holds the table
IDENTITIES = ("none", "device A", "device B", "edge", "operator")


@dataclass
class Secure:
    loop: LoopThread
    cloud: object
    edge: object
    folder: Path

    @property
    def cloud_target(self) -> str:
        return f"127.0.0.1:{self.cloud.port}"

    @property
    def edge_target(self) -> str:
        return f"127.0.0.1:{self.edge.port}"

    def channel(self, who: str, target: str, role: str) -> grpc.Channel:
        """A channel as ``who``: a holder name in the folder, or "none" (TLS without a client certificate)."""
        if who == "none":
            creds = grpc.ssl_channel_credentials(root_certificates=(self.folder / "ca.pem").read_bytes())
            return grpc.secure_channel(target, creds, options=tls.channel_options(role))
        return tls.channel(target, tls.load(str(self.folder), who), role)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory):
    tiers = start_secure_tiers(tmp_path_factory.mktemp("tls"), health_port=0)
    yield Secure(tiers.loop, tiers.cloud, tiers.edge, tiers.folder)
    stop_secure_tiers(tiers)


def test_certs_are_private_and_name_their_role(secure: Secure) -> None:
    assert oct(secure.folder.stat().st_mode & 0o777) == "0o700"
    keys = sorted(p.name for p in secure.folder.glob("*.key"))
    assert keys == ["ca.key", "cloud.key", "device-1.key", "device-2.key", "edge-1.key", "edge-2.key", "operator.key"]
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in secure.folder.glob("*.key"))
    with pytest.raises(ConfigError, match="--tls-dir: cannot read .*nobody.pem"):
        tls.load(str(secure.folder), "nobody")


def test_an_agent_streams_over_mutual_tls(secure: Secure, tmp_path: Path) -> None:
    agent = DeviceAgent(AgentConfig(cloud=secure.cloud_target, tls_dir=str(secure.folder), tls_name="device-1",
                                    model_dir=str(tmp_path / "a")))
    try:
        agent.connect()
        outcomes = agent.run(heldout("digits_cnn", 20))
    finally:
        agent.close()
    assert [o.frame_id for o in outcomes] == list(range(1, 21)) and all(o.result.ok for o in outcomes)
    assert {o.result.edge_id for o in outcomes} == {secure.edge.edge_id}


def register(stub: pb_grpc.CloudServerStub, name: str) -> pb.Assignment:
    return stub.RegisterDevice(pb.RegisterDeviceRequest(
        device_name=name, profile="pi4", radio="wifi", preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5),
        model_id="digits_cnn", split_device=2, encoding=pb.FLOAT32), timeout=10)


def test_a_token_streamed_to_the_edge_over_another_devices_certificate_is_refused(secure: Secure) -> None:
    """The edge asks the cloud about a token with the certificate it arrived over: a token copied to
    another device is refused at the edge, before any of its frames is run or relayed."""
    with secure.channel("device-1", secure.cloud_target, "cloud") as ch:
        a = register(pb_grpc.CloudServerStub(ch), "holder-check")
    m = zoo.load_manifest("digits_cnn")
    x = m.input.preprocess(load_heldout(m).images[:1])
    frame = pb.Frame(device_id=a.device_id, frame_id=1, token=a.token, model_id=a.model_id, model_version=a.model_version,
                     split_device=2, tensor=serde.tensor_to_pb(codec.encode(Partition(m, 0, 2).run(x), codec.Encoding.FLOAT32)))
    with secure.channel("device-2", secure.edge_target, "edge") as ch:
        [stolen] = pb_grpc.EdgeNodeStub(ch).Stream(iter([frame]), timeout=30)
    assert stolen.error.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert stolen.error.message == f"token: device {a.device_id}'s token was issued to another device certificate"
    with secure.channel("device-1", secure.edge_target, "edge") as ch:  # its own certificate: the edge takes it
        [own] = pb_grpc.EdgeNodeStub(ch).Stream(iter([frame]), timeout=30)
    assert own.error.code != grpc.StatusCode.UNAUTHENTICATED.value[0], own.error.message


def test_the_fake_edge_attack_is_refused_and_no_device_is_sent_to_it(secure: Secure) -> None:
    """Issue 13's attack: a client without an edge certificate registers another edge's endpoint
    and its own, and heart-beats; then an edge certificate tries to take over the live edge's
    endpoint. Every step is refused, and a device registering afterwards gets the real edge."""
    live = f"127.0.0.1:{secure.edge.port}"
    for who in ("device-2", "operator"):
        with secure.channel(who, secure.cloud_target, "cloud") as ch:
            stub = pb_grpc.CloudServerStub(ch)
            for endpoint in (live, "127.0.0.1:1"):
                with pytest.raises(grpc.RpcError) as e:
                    stub.RegisterEdge(pb.RegisterEdgeRequest(endpoint=endpoint, capacity=1e12), timeout=10)
                assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.RpcError) as e:
                stub.Heartbeat(pb.EdgeHeartbeat(edge_id=secure.edge.edge_id, load=0), timeout=10)
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with secure.channel("none", secure.cloud_target, "cloud") as ch:
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.CloudServerStub(ch).RegisterEdge(pb.RegisterEdgeRequest(endpoint="127.0.0.1:1", capacity=1e12), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE  # no client certificate: no TLS session at all
    with secure.channel("edge-2", secure.cloud_target, "cloud") as ch:  # another edge's certificate
        stub = pb_grpc.CloudServerStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            stub.RegisterEdge(pb.RegisterEdgeRequest(endpoint=live, capacity=1e-300), timeout=10)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "registered by another edge node" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            stub.Heartbeat(pb.EdgeHeartbeat(edge_id=secure.edge.edge_id, load=0), timeout=10)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert [e.endpoint for e in secure.cloud.registry.edges()] == [live]
    assert secure.cloud.registry.edges()[0].capacity == EdgeConfig().capacity
    with secure.channel("device-1", secure.cloud_target, "cloud") as ch:
        assert register(pb_grpc.CloudServerStub(ch), "victim").edge_endpoint == live


def test_handshakes_that_must_fail(secure: Secure, tmp_path: Path) -> None:
    """Plaintext against a TLS server, a client of another CA, an expired certificate."""
    health = "/grpc.health.v1.Health/Check"

    def check(channel: grpc.Channel) -> grpc.StatusCode:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()

    with grpc.insecure_channel(secure.cloud_target) as ch:
        assert check(ch) == grpc.StatusCode.UNAVAILABLE
    other = tmp_path / "other-ca"
    certs.init(other, [certs.Holder("operator", "operator")])
    with tls.channel(secure.cloud_target, tls.load(str(other), "operator"), "cloud") as ch:
        assert check(ch) == grpc.StatusCode.UNAVAILABLE
    expired = tmp_path / "expired"
    expired.mkdir()
    for name in ("ca.pem", "ca.key"):
        (expired / name).write_bytes((secure.folder / name).read_bytes())
    certs.init(expired, [certs.Holder("operator", "old")], days=1, now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30))
    with tls.channel(secure.cloud_target, tls.load(str(expired), "old"), "cloud") as ch:
        assert check(ch) == grpc.StatusCode.UNAVAILABLE
    with secure.channel("operator", secure.cloud_target, "cloud") as ch:  # the same CA, in date: fine
        assert check(ch) == grpc.StatusCode.OK, health
    # probes that cannot present a certificate get a plaintext port serving health and nothing else
    with grpc.insecure_channel(f"127.0.0.1:{secure.cloud.server.health_port}") as ch:
        assert check(ch) == grpc.StatusCode.OK
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.CloudServerStub(ch).ListHeads(pb.ListHeadsRequest(model_id="digits_cnn"), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_plaintext_beyond_loopback_is_refused_unless_forced(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="host: 0.0.0.0 is not a loopback address.*--insecure"):
        LoopThread().run(start_cloud(replace(CloudConfig(), host="0.0.0.0", db=str(tmp_path / "c.sqlite3"), metrics_port=-1)))
    with pytest.raises(ConfigError, match="--cloud: 10.1.2.3 is not a loopback address"):
        DeviceAgent(AgentConfig(cloud="10.1.2.3:50051"))
    assert tls.is_loopback("127.0.0.1") and tls.is_loopback("::1") and tls.is_loopback("localhost")
    assert not tls.is_loopback("0.0.0.0") and not tls.is_loopback("10.1.2.3")


# --- every RPC x every identity ----------------------------------------------------------------------


def _frame(a: pb.Assignment, token: str) -> pb.Frame:
    m = zoo.load_manifest("digits_cnn")
    x = m.input.preprocess(load_heldout(m).images[:1])
    return pb.Frame(device_id=a.device_id, frame_id=1, token=token, model_id=a.model_id, model_version=a.model_version,
                    split_device=a.split_device, split_edge=a.split_edge,
                    tensor=serde.tensor_to_pb(codec.encode(Partition(m, 0, a.split_device).run(x))))


def _cells(secure: Secure, a: pb.Assignment, tokens: dict[str, str]) -> dict[str, Callable[[str, grpc.Channel, grpc.Channel], None]]:
    """For each RPC, a call acting on device A (or on the live edge) as the identity given."""
    live = f"127.0.0.1:{secure.edge.port}"
    labels, weight = parity_head_weights(tuple(str(d) for d in range(10)))

    def token(who: str) -> str:
        return tokens.get(who, a.token)  # a device uses its own token; others were shown A's

    def first(stream) -> None:
        for reply in stream:
            if isinstance(reply, pb.ResultBatch):  # revision 3: the message's one result
                (reply,) = reply.results
            if isinstance(reply, pb.Result) and reply.HasField("error"):  # refused in the stream
                raise _InBand(reply.error.code)
            stream.cancel()
            return

    c = lambda ch: pb_grpc.CloudServerStub(ch)  # noqa: E731
    s = lambda ch: pb_grpc.SchedulerStub(ch)  # noqa: E731
    return {
        "CloudServer.RegisterDevice": lambda w, ch, e: register(c(ch), "table"),
        "CloudServer.UpdatePreferences": lambda w, ch, e: c(ch).UpdatePreferences(pb.UpdatePreferencesRequest(
            device_id=a.device_id, token=token(w), preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5), split_device=2), timeout=10),
        "CloudServer.GetAssignment": lambda w, ch, e: c(ch).GetAssignment(pb.GetAssignmentRequest(device_id=a.device_id, token=token(w)), timeout=10),
        "CloudServer.ReportLocation": lambda w, ch, e: c(ch).ReportLocation(pb.LocationReport(
            device_id=a.device_id, token=token(w), position=pb.Position(lat=40.7, lon=-74.0)), timeout=10),
        "CloudServer.WatchAssignment": lambda w, ch, e: first(c(ch).WatchAssignment(pb.GetAssignmentRequest(device_id=a.device_id, token=token(w)), timeout=10)),
        "CloudServer.FetchPartition": lambda w, ch, e: first(c(ch).FetchPartition(pb.FetchPartitionRequest(model_id="digits_cnn", start=0, stop=1), timeout=10)),
        "CloudServer.ListHeads": lambda w, ch, e: c(ch).ListHeads(pb.ListHeadsRequest(model_id="digits_cnn"), timeout=10),
        "CloudServer.AddHead": lambda w, ch, e: c(ch).AddHead(pb.HeadSpec(model_id="digits_cnn", name="parity", labels=labels, weight=weight,
                                                                          input=pb.HeadSpec.PROBABILITIES), timeout=10),
        "CloudServer.RegisterEdge": lambda w, ch, e: c(ch).RegisterEdge(pb.RegisterEdgeRequest(endpoint=live, capacity=EdgeConfig().capacity), timeout=10),
        "CloudServer.Heartbeat": lambda w, ch, e: c(ch).Heartbeat(pb.EdgeHeartbeat(edge_id=secure.edge.edge_id, load=0), timeout=10),
        "CloudServer.Stream": lambda w, ch, e: first(c(ch).Stream(iter([_frame(a, token(w))]), timeout=10)),
        "EdgeNode.Stream": lambda w, ch, e: first(pb_grpc.EdgeNodeStub(e).Stream(iter([_frame(a, token(w))]), timeout=10)),
        "CloudServer.StreamBatches": lambda w, ch, e: first(c(ch).StreamBatches(iter([pb.FrameBatch(frames=[_frame(a, token(w))])]), timeout=10)),
        "EdgeNode.StreamBatches": lambda w, ch, e: first(pb_grpc.EdgeNodeStub(e).StreamBatches(
            iter([pb.FrameBatch(frames=[_frame(a, token(w))])]), timeout=10)),
        "Scheduler.Place": lambda w, ch, e: s(ch).Place(pb.PlaceRequest(), timeout=30),
        "Scheduler.GetPlacement": lambda w, ch, e: s(ch).GetPlacement(pb.GetPlacementRequest(), timeout=10),
        "Scheduler.ListReputations": lambda w, ch, e: s(ch).ListReputations(pb.ReputationsRequest(), timeout=10),
        "Scheduler.CreateCampaign": lambda w, ch, e: s(ch).CreateCampaign(pb.CampaignSpec(
            name="far away", grid=pb.Grid(south_west=pb.Position(lat=10, lon=10), north_east=pb.Position(lat=11, lon=11), rows=1, cols=1),
            slots=2, reporters=[1], method="tapp", theta=1.0), timeout=30),
        "Scheduler.GetCampaign": lambda w, ch, e: s(ch).GetCampaign(pb.CampaignRequest(campaign_id="none-such"), timeout=10),
        "Scheduler.SelectSite": lambda w, ch, e: s(ch).SelectSite(pb.SiteRequest(event="fire", level=5, budget=5,
                                                                                position=pb.Position(lat=40.7, lon=-74.0)), timeout=10),
        "Scheduler.RevokeDevice": lambda w, ch, e: s(ch).RevokeDevice(pb.RevokeRequest(device_id="no-such-device"), timeout=10),
        "Health.Check": lambda w, ch, e: health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10),
        "Health.Watch": lambda w, ch, e: first(health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=10)),
        "Health.List": lambda w, ch, e: health_pb2_grpc.HealthStub(ch).List(health_pb2.HealthListRequest(), timeout=10),
        "ServerReflection.ServerReflectionInfo": lambda w, ch, e: first(reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)),
        "CloudServer.EnrolDevice": lambda w, ch, e: c(ch).EnrolDevice(pb.EnrolDeviceRequest(  # a good code each time: the role decides
            code=secure.cloud.core.enrolment.issue().code, public_key=_browser_key(), registration=pb.RegisterDeviceRequest(
                device_name="phone", radio="wifi", model_id="digits_cnn", preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5),
                encoding=pb.FLOAT16)), timeout=30),
        # last: the edge leaves (devices need a live edge to register)
        "CloudServer.DeregisterEdge": lambda w, ch, e: c(ch).DeregisterEdge(pb.DeregisterEdgeRequest(edge_id=secure.edge.edge_id), timeout=10),
    }


def _browser_key() -> bytes:
    """A browser device's public key, as a page's WebCrypto exports it (SPKI, P-256)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def served_rpcs() -> set[str]:
    """Every RPC of every service the servers register (ecd.v1's, health's, reflection's), from their
    descriptors: the matrix must have a cell for each, so an RPC added later cannot go untested."""
    services = [*pb.DESCRIPTOR.services_by_name.values(), *health_pb2.DESCRIPTOR.services_by_name.values(),
                *reflection_pb2.DESCRIPTOR.services_by_name.values()]
    return {f"{s.name}.{m.name}" for s in services for m in s.methods}


class _InBand(Exception):
    def __init__(self, code: int):
        self.code = code


REFUSALS = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAVAILABLE}


def _outcome(call: Callable[[], None]) -> str:
    """"allowed" when the call reached its handler (whatever the handler then answered, e.g. NOT_FOUND
    for a campaign that does not exist), else the refusal's status."""
    try:
        call()
    except _InBand as e:
        code = next(c for c in grpc.StatusCode if c.value[0] == e.code)
        return code.name if code in REFUSALS else "allowed"
    except grpc.RpcError as e:
        return e.code().name if e.code() in REFUSALS else "allowed"
    return "allowed"


def test_every_rpc_by_every_identity(secure: Secure) -> None:
    holders = {"device A": "device-1", "device B": "device-2", "edge": "edge-1", "operator": "operator", "none": "none"}
    with secure.channel("device-1", secure.cloud_target, "cloud") as ch:
        a = register(pb_grpc.CloudServerStub(ch), "A")
    with secure.channel("device-2", secure.cloud_target, "cloud") as ch:
        b = register(pb_grpc.CloudServerStub(ch), "B")
    assert a.edge_endpoint == f"127.0.0.1:{secure.edge.port}"
    cells = _cells(secure, a, {"device A": a.token, "device B": b.token})
    assert set(cells) == served_rpcs()  # complete by construction
    table: dict[str, dict[str, str]] = {}
    for rpc, call in cells.items():
        for who in IDENTITIES:
            with secure.channel(holders[who], secure.cloud_target, "cloud") as ch, \
                 secure.channel(holders[who], secure.edge_target, "edge") as e:
                table.setdefault(rpc, {})[who] = _outcome(lambda: call(who, ch, e))
    expected_allowed = {
        "CloudServer.RegisterDevice": {"device A", "device B"},
        "CloudServer.UpdatePreferences": {"device A", "edge"},  # the edge A is assigned to, relaying a browser device's
        "CloudServer.GetAssignment": {"device A", "edge"},
        "CloudServer.ReportLocation": {"device A"},
        "CloudServer.WatchAssignment": {"device A"},
        "CloudServer.FetchPartition": {"device A", "device B", "edge"},
        "CloudServer.ListHeads": {"device A", "device B", "edge", "operator"},
        "CloudServer.AddHead": {"operator"},
        "CloudServer.RegisterEdge": {"edge"},
        "CloudServer.Heartbeat": {"edge"},
        "CloudServer.Stream": {"edge"},
        "EdgeNode.Stream": {"device A"},
        "CloudServer.StreamBatches": {"edge"},
        "EdgeNode.StreamBatches": {"device A"},
        "Scheduler.Place": {"operator"},
        "Scheduler.GetPlacement": {"operator"},
        "Scheduler.ListReputations": {"operator"},
        "Scheduler.CreateCampaign": {"operator"},
        "Scheduler.GetCampaign": {"operator"},
        "Scheduler.SelectSite": {"operator"},
        "Scheduler.RevokeDevice": {"operator"},
        "Health.Check": {"device A", "device B", "edge", "operator"},
        "Health.Watch": {"device A", "device B", "edge", "operator"},
        "Health.List": set(),  # grpc.aio's health servicer does not implement it: not in the policy, denied to all
        "ServerReflection.ServerReflectionInfo": {"device A", "device B", "edge", "operator"},
        "CloudServer.EnrolDevice": {"edge"},  # a browser device's enrolment, relayed by its edge node
        "CloudServer.DeregisterEdge": {"edge"},
    }
    got_allowed = {rpc: {w for w, v in row.items() if v == "allowed"} for rpc, row in table.items()}
    assert got_allowed == expected_allowed
    assert all(row["none"] == "UNAVAILABLE" for row in table.values())  # no client certificate, no TLS session
    markdown = render(table)
    page = SECURITY_PAGE.read_text()
    if os.environ.get("ECD_WRITE_TABLE"):
        start, end = page.index(TABLE_START), page.index(TABLE_END)
        SECURITY_PAGE.write_text(page[:start] + TABLE_START + "\n" + markdown + page[end:])
    else:
        assert markdown in page, "docs/explanation/security.md's authorization table is stale: rerun with ECD_WRITE_TABLE=1\n" + markdown


TABLE_START = "<!-- authorization table: tests/integration/test_security.py -->"
TABLE_END = "<!-- end of authorization table -->"


def render(table: dict[str, dict[str, str]]) -> str:
    rows = ["| RPC | " + " | ".join(IDENTITIES) + " |", "|---|" + "---|" * len(IDENTITIES)]
    for rpc, row in table.items():
        rows.append(f"| `{rpc}` | " + " | ".join("✅" if row[w] == "allowed" else row[w] for w in IDENTITIES) + " |")
    return "\n".join(rows) + "\n"
