"""The device agent's gRPC face: the cloud and the edge node as :mod:`device_agent.peers`, over gRPC.

The only module of the agent that knows the wire: it turns messages into records
(:mod:`ecd.transport.serde`) and a peer's status into :class:`~ecd.errors.PeerError` — or
:class:`~device_agent.peers.PeerDown` for ``UNAVAILABLE``, which the agent retries elsewhere.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ecd import distribution
from ecd.errors import EcdError, PeerError, UnavailableError
from ecd.manifest import Manifest
from ecd.metrics import ServiceMetrics
from ecd.transport import serde
from ecd.transport import tls as tls_
from ecd.types import ONE_FRAME_REVISION, PROTOCOL_REVISION, Assignment, DeviceRegistration, Frame, LocationReport, PartitionRequest, PreferencesUpdate, Result
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc

from device_agent.peers import PeerDown

__all__ = ["GrpcCloud", "GrpcEdge"]


def _peer_error(e: grpc.RpcError) -> EcdError:
    """A gRPC status as the agent's error: UNAVAILABLE is worth retrying (:class:`PeerDown`)."""
    message = f"{e.code().name}: {e.details()}"
    return PeerDown(message) if e.code() == grpc.StatusCode.UNAVAILABLE else PeerError(e.code().name, message)


class GrpcWatch:
    def __init__(self, call) -> None:
        self.call = call

    def __iter__(self) -> Iterator[Assignment]:
        try:
            for msg in self.call:
                yield serde.assignment_from_pb(msg)
        except grpc.RpcError as e:
            raise _peer_error(e) from None

    def cancel(self) -> None:
        self.call.cancel()


class GrpcCloud:
    """:class:`~device_agent.peers.CloudPeer` over gRPC: every unary call has ``timeout_s``."""

    def __init__(self, target: str, tls: tls_.Tls | None, options: list, timeout_s: float) -> None:
        self.target = target
        self.channel = tls_.channel(target, tls, "cloud", options)
        self.stub = pb_grpc.CloudServerStub(self.channel)
        self.timeout_s = timeout_s

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout_s)
        except grpc.RpcError as e:
            raise _peer_error(e) from None

    def wait_ready(self, timeout_s: float) -> None:
        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise UnavailableError(f"--cloud: no cloud server answers at {self.target}") from None

    def fetch(self, request: PartitionRequest, dest: Path) -> Manifest:
        try:
            return distribution.fetch(map(serde.chunk_from_pb, self.stub.FetchPartition(serde.partition_request_to_pb(request))), dest)
        except grpc.RpcError as e:
            raise _peer_error(e) from None

    def register(self, registration: DeviceRegistration) -> Assignment:
        return serde.assignment_from_pb(self._call(self.stub.RegisterDevice, serde.registration_to_pb(registration)))

    def update_preferences(self, update: PreferencesUpdate) -> Assignment:
        return serde.assignment_from_pb(self._call(self.stub.UpdatePreferences, serde.update_to_pb(update)))

    def get_assignment(self, device_id: str, token: str) -> Assignment:
        return serde.assignment_from_pb(self._call(self.stub.GetAssignment, pb.GetAssignmentRequest(device_id=device_id, token=token)))

    def report_location(self, report: LocationReport) -> Assignment:
        return serde.assignment_from_pb(self._call(self.stub.ReportLocation, serde.location_to_pb(report)))

    def watch_assignment(self, device_id: str, token: str) -> GrpcWatch:
        return GrpcWatch(self.stub.WatchAssignment(pb.GetAssignmentRequest(device_id=device_id, token=token)))

    def close(self) -> None:
        self.channel.close()


class GrpcEdge:
    """:class:`~device_agent.peers.EdgePeer` over gRPC. Under TLS the node must hold an *edge*
    certificate of this deployment's CA (a node that merely registered an address gets no frame)."""

    def __init__(self, a: Assignment, tls: tls_.Tls | None, options: list, allow_plaintext: bool, metrics: ServiceMetrics,
                 batches: bool = True) -> None:
        tls_.check_plaintext(tls, tls_.host_of(a.edge_endpoint), allow_plaintext, "edge_endpoint")
        self.batches = batches  # several frames per message (StreamBatches), or one (Stream)
        self.edge_id, self.endpoint = a.edge_id, a.edge_endpoint
        self.channel = tls_.channel(a.edge_endpoint, tls, "edge", options)
        self.metrics = metrics
        self._call = None  # the current stream, which abandon() cancels
        self._abandoned = False

    def stream(self, messages: Iterator[list[Frame]]) -> Iterator[Result]:
        self._abandoned = False
        stub = pb_grpc.EdgeNodeStub(self.channel)
        if self.batches:
            self._call = call = stub.StreamBatches(self._batches(messages))
        else:
            self._call = call = stub.Stream(self._one_per_message(messages))
        if self._abandoned:  # abandon() ran while the call was being made (its frames already sent): cancel it now
            call.cancel()
        try:
            for msg in call:
                if self.batches:
                    for result in msg.results:
                        yield serde.result_from_pb(result)
                else:
                    yield serde.result_from_pb(msg)
        except grpc.RpcError as e:
            if self._abandoned and e.code() == grpc.StatusCode.CANCELLED:
                raise PeerDown(f"CANCELLED: edge {self.edge_id} abandoned: it answered nothing in time") from None
            if e.code() == grpc.StatusCode.UNIMPLEMENTED and self.batches:
                raise PeerError("UNIMPLEMENTED", f"UNIMPLEMENTED: edge {self.edge_id} takes one frame per message (ecd.v1 "
                                "revision < 3, no StreamBatches); run the agent with --linger-ms 0, or upgrade the edge node") from None
            raise _peer_error(e) from None

    def probe(self, timeout_s: float = 2.0) -> float:
        """Seconds one gRPC health check takes on this channel: the link's round trip when it is idle
        (``device_agent.link``), a few hundred bytes each way."""
        t0 = time.perf_counter()
        try:
            health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError as e:
            raise _peer_error(e) from None
        return time.perf_counter() - t0

    def abandon(self) -> None:
        self._abandoned = True
        if self._call is not None:
            self._call.cancel()

    def _one_per_message(self, messages: Iterator[list[Frame]]) -> Iterator[pb.Frame]:
        """One frame per message (the one-frame Stream call): the first complete, stating the
        revision it needs (``ONE_FRAME_REVISION``, so a revision-2 edge node takes it); every later one compact."""
        first = True
        for message in messages:
            for frame in message:
                msg = self._wire(frame, first, ONE_FRAME_REVISION)
                first = False
                self.metrics.hop_bytes.labels("device", "device_to_edge").inc(msg.ByteSize())
                yield msg

    def _batches(self, messages: Iterator[list[Frame]]) -> Iterator[pb.FrameBatch]:
        """Several frames per message (revision 3): the stream's first frame complete, the rest compact."""
        first = True
        for message in messages:
            batch = pb.FrameBatch()
            for frame in message:
                batch.frames.append(self._wire(frame, first, PROTOCOL_REVISION))
                first = False
            self.metrics.hop_bytes.labels("device", "device_to_edge").inc(batch.ByteSize())
            yield batch

    @staticmethod
    def _wire(frame: Frame, first: bool, revision: int) -> pb.Frame:
        """The stream's first frame complete, stating the protocol revision (it binds the stream:
        ``ecd.types.StreamHeader``); every later one compact."""
        msg = serde.frame_to_pb(frame)
        if first:
            msg.protocol_revision = revision
            return msg
        return serde.compact_frame_to_pb(msg)

    def close(self) -> None:
        self.channel.close()
