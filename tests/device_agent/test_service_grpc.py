"""The agent's gRPC face (device_agent.service) against a scripted cloud and edge node: real gRPC
servers on loopback ports chosen by the OS, answering as each test sets. What the agent relies on:
a peer's status becomes PeerDown (UNAVAILABLE: retried elsewhere) or PeerError naming the status;
every unary call to the cloud has its timeout; a stream's first frame binds it (the protocol
revision, every field) and the later ones are compact; the bytes sent are counted; an abandoned
stream says why. No test reached this module directly before (the mutation gate's device group)."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from device_agent.peers import PeerDown
from device_agent.service import GrpcCloud, GrpcEdge
from ecd import certs
from ecd.codec import encode
from ecd.errors import ConfigError, PeerError, UnavailableError
from ecd.metrics import ServiceMetrics
from ecd.split import Preferences
from ecd.transport import tls
from ecd.types import (
    ONE_FRAME_REVISION,
    PROTOCOL_REVISION,
    Assignment,
    DeviceRegistration,
    Encoding,
    Frame,
    LocationReport,
    PartitionRequest,
    Position,
    PreferencesUpdate,
    Split,
)
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc

TIMEOUT_S = 7.0
PREFS = Preferences(0.5, 0.5)
PB_PREFS = pb.Preferences(w_energy=0.5, w_privacy=0.5)


class ScriptedCloud(pb_grpc.CloudServerServicer):
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None  # abort every call with it, when set
        self.calls: list[tuple[str, object, float | None]] = []  # (method, request, time remaining)
        self.model_id = ""  # answered as the assignment's model_id ("": the method's name)

    def _answer(self, name: str, request, context) -> pb.Assignment:
        self.calls.append((name, request, context.time_remaining()))
        if self.code is not None:
            context.abort(self.code, f"scripted {name}")
        return pb.Assignment(device_id="dev-1", token="tok", edge_endpoint="127.0.0.1:1", model_id=self.model_id or name,
                             preferences=PB_PREFS)

    def RegisterDevice(self, request, context):
        return self._answer("RegisterDevice", request, context)

    def UpdatePreferences(self, request, context):
        return self._answer("UpdatePreferences", request, context)

    def GetAssignment(self, request, context):
        return self._answer("GetAssignment", request, context)

    def ReportLocation(self, request, context):
        return self._answer("ReportLocation", request, context)

    def WatchAssignment(self, request, context):
        self.calls.append(("WatchAssignment", request, None))
        yield pb.Assignment(device_id=request.device_id, placement_version=1, preferences=PB_PREFS)
        yield pb.Assignment(device_id=request.device_id, placement_version=2, preferences=PB_PREFS)
        context.abort(self.code or grpc.StatusCode.UNAVAILABLE, "scripted watch end")

    def FetchPartition(self, request, context):
        self.calls.append(("FetchPartition", request, None))
        context.abort(self.code or grpc.StatusCode.NOT_FOUND, "scripted fetch")


class ScriptedEdge(pb_grpc.EdgeNodeServicer):
    def __init__(self) -> None:
        self.received: list[pb.Frame] = []
        self.mode = "answer"  # "answer": one result per frame; "hold": read, answer nothing; a StatusCode: abort
        self.holding = threading.Event()
        self.output: list[float] = []  # every result's output
        self.messages: list[int] = []  # frames per FrameBatch (revision 3)

    def Stream(self, request_iterator, context):
        if isinstance(self.mode, grpc.StatusCode):
            context.abort(self.mode, "scripted edge refusal")
        for msg in request_iterator:
            self.received.append(msg)
            if self.mode == "hold":
                self.holding.set()
                continue
            yield pb.Result(device_id="dev-1", frame_id=msg.frame_id, output=self.output)

    def StreamBatches(self, request_iterator, context):
        """Revision 3: the same, a message of frames at a time; one ResultBatch per message."""
        if isinstance(self.mode, grpc.StatusCode):
            context.abort(self.mode, "scripted edge refusal")
        for batch in request_iterator:
            self.received.extend(batch.frames)
            self.messages.append(len(batch.frames))
            if self.mode == "hold":
                self.holding.set()
                continue
            yield pb.ResultBatch(results=[pb.Result(device_id="dev-1", frame_id=f.frame_id, output=self.output) for f in batch.frames])


class Revision2Edge(pb_grpc.EdgeNodeServicer):
    """An edge node of ecd.v1 revision 2: the one-frame Stream only (StreamBatches is UNIMPLEMENTED)."""

    def __init__(self) -> None:
        self.received: list[pb.Frame] = []

    def Stream(self, request_iterator, context):
        for msg in request_iterator:
            self.received.append(msg)
            yield pb.Result(device_id="dev-1", frame_id=msg.frame_id)


@pytest.fixture
def peers():
    cloud, edge = ScriptedCloud(), ScriptedEdge()
    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_CloudServerServicer_to_server(cloud, server)
    pb_grpc.add_EdgeNodeServicer_to_server(edge, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield cloud, edge, f"127.0.0.1:{port}"
    server.stop(0)


def frame(frame_id: int) -> Frame:
    return Frame("dev-1", frame_id, "tok", "m", "v1", Split(1, 0), encode(np.zeros((1, 3), np.float32), Encoding.FLOAT32),
                 captured_unix_ns=frame_id)


def assignment(endpoint: str) -> Assignment:
    return Assignment("dev-1", "tok", endpoint, "m", "v1", Split(1, 0), 1, PREFS, edge_id="edge-7")


def test_every_unary_call_to_the_cloud_carries_its_request_and_timeout(peers) -> None:
    cloud, _, target = peers
    c = GrpcCloud(target, None, [], TIMEOUT_S)
    try:
        answers = [
            c.register(DeviceRegistration("d", "pi4", "wifi", PREFS, "m", 1, Encoding.FLOAT32)),
            c.update_preferences(PreferencesUpdate("dev-1", "tok", PREFS, 2)),
            c.get_assignment("dev-1", "tok"),
            c.report_location(LocationReport("dev-1", "tok", Position(1.0, 2.0))),
        ]
    finally:
        c.close()
    assert [a.model_id for a in answers] == ["RegisterDevice", "UpdatePreferences", "GetAssignment", "ReportLocation"]
    assert [(a.device_id, a.token) for a in answers] == [("dev-1", "tok")] * 4
    names = [name for name, _, _ in cloud.calls]
    assert names == ["RegisterDevice", "UpdatePreferences", "GetAssignment", "ReportLocation"]
    assert all(remaining is not None and TIMEOUT_S - 2 < remaining <= TIMEOUT_S + 0.5 for _, _, remaining in cloud.calls)
    _, reg, _ = cloud.calls[0]
    assert (reg.device_name, reg.profile, reg.radio, reg.split_device) == ("d", "pi4", "wifi", 1)
    _, upd, _ = cloud.calls[1]
    assert (upd.device_id, upd.token, upd.split_device) == ("dev-1", "tok", 2)
    _, get, _ = cloud.calls[2]
    assert (get.device_id, get.token) == ("dev-1", "tok")
    _, loc, _ = cloud.calls[3]
    assert (loc.device_id, loc.position.lat, loc.position.lon) == ("dev-1", 1.0, 2.0)


@pytest.mark.parametrize("code, kind", [(grpc.StatusCode.UNAVAILABLE, PeerDown), (grpc.StatusCode.FAILED_PRECONDITION, PeerError)])
def test_a_refusal_becomes_peer_down_only_for_unavailable_naming_the_status(peers, code, kind) -> None:
    cloud, _, target = peers
    cloud.code = code
    c = GrpcCloud(target, None, [], TIMEOUT_S)
    try:
        with pytest.raises(PeerError if kind is PeerError else PeerDown) as e:
            c.get_assignment("dev-1", "tok")
        assert type(e.value) is kind
        assert str(e.value) == f"{code.name}: scripted GetAssignment"
        if kind is PeerError:
            assert e.value.status == code.name
        with pytest.raises(kind) as e:
            c.fetch(PartitionRequest("m", "v1", 0, 1), Path("unused"))
        assert str(e.value) == f"{code.name}: scripted fetch"
        watch = c.watch_assignment("dev-1", "tok")
        got = []
        with pytest.raises(kind) as e:
            for a in watch:
                got.append(a.placement_version)
        assert got == [1, 2] and str(e.value) == f"{code.name}: scripted watch end"
        assert [(r.device_id, r.token) for n, r, _ in cloud.calls if n == "WatchAssignment"] == [("dev-1", "tok")]
    finally:
        c.close()


def test_a_watch_cancelled_ends_its_call(peers) -> None:
    _, _, target = peers
    c = GrpcCloud(target, None, [], TIMEOUT_S)
    try:
        watch = c.watch_assignment("dev-1", "tok")
        it = iter(watch)
        assert next(it).placement_version == 1
        watch.cancel()
        with pytest.raises(PeerError) as e:
            next(it)  # not the second assignment the cloud sent
        assert type(e.value) is PeerError and e.value.status == "CANCELLED"
    finally:
        c.close()


def test_waiting_for_a_cloud_that_never_answers_names_the_option_and_the_address() -> None:
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen()
    target = f"127.0.0.1:{mute.getsockname()[1]}"
    c = GrpcCloud(target, None, [], TIMEOUT_S)
    try:
        with pytest.raises(UnavailableError) as e:
            c.wait_ready(0.2)
        assert str(e.value) == f"--cloud: no cloud server answers at {target}"
    finally:
        c.close()
        mute.close()


@pytest.mark.parametrize("batches", [True, False], ids=["frame-batches", "one-per-message"])
def test_a_stream_binds_with_its_first_frame_sends_the_rest_compact_and_counts_the_bytes(peers, batches: bool) -> None:
    _, edge, target = peers
    metrics = ServiceMetrics("device")
    e = GrpcEdge(assignment(target), None, [], False, metrics, batches)
    revision = PROTOCOL_REVISION if batches else ONE_FRAME_REVISION  # a lone-frame stream states only what it needs
    try:
        assert (e.edge_id, e.endpoint) == ("edge-7", target)
        results = list(e.stream(iter([[frame(1), frame(2)], [frame(3)]])))
        assert [r.frame_id for r in results] == [1, 2, 3]
        assert edge.messages == ([2, 1] if batches else [])  # the agent's messages as they were made
        first, *later = edge.received
        assert (first.protocol_revision, first.device_id, first.token, first.model_id) == (revision, "dev-1", "tok", "m")
        assert [(m.frame_id, m.protocol_revision, m.device_id, m.token, m.captured_unix_ns) for m in later] == [(2, 0, "", "", 2), (3, 0, "", "", 3)]
        sent = metrics.registry.get_sample_value("ecd_hop_bytes_total", {"service": "device", "hop": "device_to_edge"})
        if batches:  # whole messages, as they were cut
            assert sent == pb.FrameBatch(frames=edge.received[:2]).ByteSize() + pb.FrameBatch(frames=edge.received[2:]).ByteSize()
        else:
            assert sent == sum(m.ByteSize() for m in edge.received)
        # a second stream binds again with its own first frame
        edge.received.clear()
        list(e.stream(iter([[frame(4)]])))
        assert edge.received[0].protocol_revision == revision and edge.received[0].device_id == "dev-1"
    finally:
        e.close()


def test_an_edge_of_revision_2_takes_one_frame_per_message_and_refuses_batches_by_name() -> None:
    old = Revision2Edge()
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_EdgeNodeServicer_to_server(old, server)
    target = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    try:
        one = GrpcEdge(assignment(target), None, [], False, ServiceMetrics("device"), batches=False)
        assert [r.frame_id for r in one.stream(iter([[frame(1), frame(2)]]))] == [1, 2]
        assert [m.protocol_revision for m in old.received] == [ONE_FRAME_REVISION, 0]
        batched = GrpcEdge(assignment(target), None, [], False, ServiceMetrics("device"), batches=True)
        with pytest.raises(PeerError) as err:
            list(batched.stream(iter([[frame(3)]])))
        assert err.value.status == "UNIMPLEMENTED" and "run the agent with --linger-ms 0" in str(err.value)
        one.close()
        batched.close()
    finally:
        server.stop(0)


@pytest.mark.parametrize("batches", [True, False], ids=["frame-batches", "one-per-message"])
def test_a_refusing_edge_is_a_peer_error_and_a_gone_one_peer_down(peers, batches: bool) -> None:
    _, edge, target = peers
    e = GrpcEdge(assignment(target), None, [], False, ServiceMetrics("device"), batches)
    try:
        edge.mode = grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(PeerError) as err:
            list(e.stream(iter([[frame(1)]])))
        assert type(err.value) is PeerError and err.value.status == "PERMISSION_DENIED"
        edge.mode = grpc.StatusCode.UNAVAILABLE
        with pytest.raises(PeerDown):
            list(e.stream(iter([[frame(1)]])))
        edge.mode = grpc.StatusCode.CANCELLED  # cancelled by the edge, not abandoned by the agent: no retry
        with pytest.raises(PeerError) as err:
            list(e.stream(iter([[frame(1)]])))
        assert type(err.value) is PeerError and err.value.status == "CANCELLED"
    finally:
        e.close()


@pytest.mark.parametrize("batches", [True, False], ids=["frame-batches", "one-per-message"])
def test_an_abandoned_stream_breaks_saying_why_and_the_next_one_is_not_abandoned(peers, batches: bool) -> None:
    _, edge, target = peers
    e = GrpcEdge(assignment(target), None, [], False, ServiceMetrics("device"), batches)
    ended = threading.Event()
    try:
        e.abandon()  # no stream yet: nothing to cancel, and the next stream starts afresh
        edge.mode = "hold"

        def messages():
            yield [frame(1)]
            ended.wait(30)  # the stream stays open, the frame unanswered

        def abandon() -> None:
            edge.holding.wait(30)
            e.abandon()

        threading.Thread(target=abandon, daemon=True).start()
        with pytest.raises(PeerDown) as err:
            list(e.stream(messages()))
        assert str(err.value) == "CANCELLED: edge edge-7 abandoned: it answered nothing in time"
        edge.mode = "answer"
        assert [r.frame_id for r in e.stream(iter([[frame(2)]]))] == [2]  # a new stream: not abandoned
    finally:
        ended.set()
        e.close()


def test_an_edge_beyond_loopback_needs_tls_or_insecure_naming_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        GrpcEdge(assignment("192.0.2.1:50051"), None, [], False, ServiceMetrics("device"))
    assert str(err.value).startswith("edge_endpoint: ")
    GrpcEdge(assignment("192.0.2.1:50051"), None, [], True, ServiceMetrics("device")).close()  # forced


def test_under_tls_the_stream_and_the_cloud_calls_go_encrypted_and_an_edge_beyond_loopback_is_dialled(tmp_path: Path) -> None:
    folder = tmp_path / "certs"
    certs.init(folder, certs.default_holders(edges=1, devices=1))
    edge = ScriptedEdge()
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_EdgeNodeServicer_to_server(edge, server)
    port = server.add_secure_port("127.0.0.1:0", tls.load(str(folder), "edge-1").server_credentials())
    server.start()
    device = tls.load(str(folder), "device-1")
    try:
        e = GrpcEdge(assignment(f"127.0.0.1:{port}"), device, [], False, ServiceMetrics("device"))
        try:
            assert [r.frame_id for r in e.stream(iter([[frame(1)]]))] == [1]  # a plaintext channel would find no edge
        finally:
            e.close()
        GrpcEdge(assignment("192.0.2.1:50051"), device, [], False, ServiceMetrics("device")).close()  # TLS: no plaintext check
    finally:
        server.stop(0)
    cloud_server = grpc.server(ThreadPoolExecutor(max_workers=4))  # and the cloud's calls, checked against its certificate
    pb_grpc.add_CloudServerServicer_to_server(ScriptedCloud(), cloud_server)
    port = cloud_server.add_secure_port("127.0.0.1:0", tls.load(str(folder), "cloud").server_credentials())
    cloud_server.start()
    c = GrpcCloud(f"127.0.0.1:{port}", device, [], TIMEOUT_S)
    try:
        assert c.get_assignment("dev-1", "tok").model_id == "GetAssignment"
    finally:
        c.close()
        cloud_server.stop(0)


def test_the_channels_take_the_agents_options_such_as_its_message_limit(peers) -> None:
    """A reply over gRPC's default 4 MiB reaches the agent when its options allow it."""
    cloud, edge, target = peers
    big = [("grpc.max_receive_message_length", 64 * 2**20)]

    edge.output = [0.5] * (5 * 2**18 + 1)  # over 5 MiB
    cloud.model_id = "m" * (5 * 2**20)
    e = GrpcEdge(assignment(target), None, big, False, ServiceMetrics("device"))
    c = GrpcCloud(target, None, big, TIMEOUT_S)
    try:
        assert [len(r.output) for r in e.stream(iter([[frame(1)]]))] == [5 * 2**18 + 1]
        assert len(c.get_assignment("dev-1", "tok").model_id) == 5 * 2**20
    finally:
        e.close()
        c.close()
