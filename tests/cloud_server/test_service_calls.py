"""The cloud's CloudServer calls over real gRPC on loopback (cloud_server.service), each pinned by
what an operator or a device relies on: frames an edge streams are answered and counted in the
cloud's metrics, a message over the frame cap ends the stream naming ``frames`` after what came
before it, the heads of a model are listed, a watcher hears each change once, and rate limits
name what was limited, its burst and whom; a heartbeat hears of revoked devices, a plaintext
caller's devices count against no certificate. The workers, the drain and a stop's frames in
flight: test_service_drain.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest
from harness import Tiers, cloud_frames, start_tiers, stop_tiers, wait_until

from cloud_server.config import CloudConfig
from ecd.limits import MAX_FRAMES_PER_MESSAGE
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc


def browser_key() -> bytes:
    """A browser device's public key, as a page's WebCrypto exports it (SPKI, P-256)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def sample(t: Tiers, name: str, **labels: str) -> float | None:
    return t.cloud.metrics.registry.get_sample_value(name, {"service": "cloud", **labels})


def test_frames_an_edge_streams_are_answered_and_counted_with_their_compute_time_and_bytes(tiers: Tiers) -> None:
    wait_until(lambda: tiers.cloud.servicer.streams == 1, "the edge's link to the cloud")  # open before any frame
    open_before = 1
    frames = cloud_frames(tiers, 5)
    one_by_one = list(tiers.cloud_stub.Stream(iter(frames[:3]), timeout=60))
    (batch,) = list(tiers.cloud_stub.StreamBatches(iter([pb.FrameBatch(frames=frames[3:])]), timeout=60))
    results = [*one_by_one, *batch.results]
    assert [r.frame_id for r in results] == [1, 2, 3, 4, 5] and not any(r.HasField("error") for r in results)
    assert sample(tiers, "ecd_frames_total", outcome="ok") == 5
    assert sample(tiers, "ecd_frames_total", outcome="error") == 0
    assert sample(tiers, "ecd_stage_seconds_count", stage="cloud_compute") == 5
    assert sample(tiers, "ecd_stage_seconds_sum", stage="cloud_compute") == pytest.approx(sum(r.cloud_compute_s for r in results))
    assert sample(tiers, "ecd_hop_bytes_total", hop="edge_to_cloud") == sum(r.edge_to_cloud_bytes for r in results) > 0
    # both streams ended: only the edge's own stream is counted open, and only its reader kept
    servicer = tiers.cloud.servicer
    wait_until(lambda: servicer.streams == open_before, "the ended streams to be counted closed")
    assert len(servicer.readers) == open_before == 1


def test_a_refused_frame_is_counted_by_its_status_and_not_timed(tiers: Tiers) -> None:
    (refused,) = list(tiers.cloud_stub.Stream(iter(cloud_frames(tiers, 1, token="not-a-token")), timeout=60))
    assert refused.error.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert sample(tiers, "ecd_frames_total", outcome="error") == 1
    assert sample(tiers, "ecd_frames_total", outcome="ok") == 0
    assert sample(tiers, "ecd_frame_errors_total", code="UNAUTHENTICATED") == 1
    assert (sample(tiers, "ecd_stage_seconds_count", stage="cloud_compute") or 0) == 0
    assert (sample(tiers, "ecd_hop_bytes_total", hop="edge_to_cloud") or 0) == 0


def test_a_message_over_the_frame_cap_ends_the_stream_naming_frames_after_what_came_before(tiers: Tiers) -> None:
    frames = cloud_frames(tiers, 2)
    over = pb.FrameBatch(frames=[pb.Frame()] * (MAX_FRAMES_PER_MESSAGE + 1))  # refused before any frame is read
    got = []
    with pytest.raises(grpc.RpcError) as e:
        for reply in tiers.cloud_stub.StreamBatches(iter([pb.FrameBatch(frames=frames), over]), timeout=60):
            got.append([r.frame_id for r in reply.results])
    assert got == [[1, 2]]
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert e.value.details() == f"frames: a message carries at most {MAX_FRAMES_PER_MESSAGE} frames, got {MAX_FRAMES_PER_MESSAGE + 1}"
    assert sample(tiers, "ecd_frames_total", outcome="ok") == 2
    # the stream is over, the cloud is not: the next stream is served
    assert [r.frame_id for r in tiers.cloud_stub.Stream(iter(frames[:1]), timeout=60)] == [1]


def test_the_heads_of_a_served_model_are_listed_and_an_unknown_model_is_named(tiers: Tiers) -> None:
    heads = tiers.cloud_stub.ListHeads(pb.ListHeadsRequest(model_id="digits_cnn"), timeout=30).heads
    assert [h.name for h in heads] == ["class"]
    assert heads[0].model_id == "digits_cnn" and list(heads[0].labels) == [str(d) for d in range(10)]
    with pytest.raises(grpc.RpcError) as e:
        tiers.cloud_stub.ListHeads(pb.ListHeadsRequest(model_id="none-such"), timeout=30)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert e.value.details().startswith("model_id: model 'none-such' is not served here")


def test_a_watcher_hears_its_assignment_then_each_change_once(tiers: Tiers) -> None:
    """A watcher re-reads the assignment whenever the cloud says something may have changed
    (``core.on_change``: a placement, a move) and is sent it only when it did change."""
    a = tiers.register(split=2)
    watch = tiers.cloud_stub.WatchAssignment(pb.GetAssignmentRequest(device_id=a.device_id, token=a.token), timeout=60)

    def update(split: int, w_privacy: float) -> None:
        tiers.cloud_stub.UpdatePreferences(pb.UpdatePreferencesRequest(
            device_id=a.device_id, token=a.token, preferences=pb.Preferences(w_energy=1 - w_privacy, w_privacy=w_privacy),
            split_device=split), timeout=30)

    try:
        first = next(watch)
        assert (first.device_id, first.split_device, first.edge_id) == (a.device_id, 2, a.edge_id)
        tiers.cloud.core.on_change()  # nothing changed for this device: nothing is sent
        update(3, 0.5)
        tiers.cloud.core.on_change()
        assert next(watch).split_device == 3
        update(3, 0.75)  # the preferences alone
        tiers.cloud.core.on_change()
        assert next(watch).preferences.w_privacy == 0.75
    finally:
        watch.cancel()


def test_a_watch_with_a_wrong_token_is_refused_naming_token(tiers: Tiers) -> None:
    a = tiers.register(split=2)
    with pytest.raises(grpc.RpcError) as e:
        next(tiers.cloud_stub.WatchAssignment(pb.GetAssignmentRequest(device_id=a.device_id, token="wrong"), timeout=30))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert e.value.details().startswith("token:")


def test_registrations_are_counted_per_host_with_a_burst_of_five_times_the_rate(tmp_path: Path) -> None:
    t = start_tiers(tmp_path, cloud_cfg=CloudConfig(registrations_per_s=0.2))  # a burst of 1: the edge spent it
    enrolment = pb.EnrolDeviceRequest(code=t.cloud.core.enrolment.issue().code, public_key=browser_key(), registration=pb.RegisterDeviceRequest(
        device_name="phone", radio="wifi", model_id="digits_cnn", preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5), encoding=pb.FLOAT16))
    try:
        for what, call in [("a device", lambda: t.register(split=2)),
                           ("an edge", lambda: t.cloud_stub.RegisterEdge(pb.RegisterEdgeRequest(endpoint="127.0.0.1:9", capacity=10), timeout=30)),
                           ("a browser device", lambda: t.cloud_stub.EnrolDevice(enrolment, timeout=30))]:
            with pytest.raises(grpc.RpcError) as e:
                call()
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, what
            assert e.value.details() == "registrations: more than 0.2 a second (burst 1) from 127.0.0.1; retry later", what
    finally:
        stop_tiers(t)


def test_location_reports_are_counted_per_device_with_a_burst_of_ten_times_the_rate(tmp_path: Path) -> None:
    t = start_tiers(tmp_path, cloud_cfg=CloudConfig(locations_per_s=0.1))  # a burst of 1
    try:
        a = t.register(split=2)
        report = pb.LocationReport(device_id=a.device_id, token=a.token, position=pb.Position(lat=40.7, lon=-74.0))
        t.cloud_stub.ReportLocation(report, timeout=30)
        with pytest.raises(grpc.RpcError) as e:
            t.cloud_stub.ReportLocation(report, timeout=30)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert e.value.details() == f"ReportLocation: more than 0.1 a second (burst 1) from {a.device_id}; retry later"
    finally:
        stop_tiers(t)


def test_slow_control_calls_run_off_the_event_loop(tiers: Tiers) -> None:
    """Deciding a split (a registration, an enrolment), adding a head and reading a partition's
    files take a while: they run in a worker thread, so the loop serving every stream is never
    held up by them."""
    from cloud_server.heads import parity_head_weights

    ran_on: list[tuple[str, threading.Thread]] = []

    def recording(name: str, fn):
        def wrapper(*args, **kw):
            ran_on.append((name, threading.current_thread()))
            return fn(*args, **kw)
        return wrapper

    core = tiers.cloud.core
    core.devices.register = recording("register", core.devices.register)
    core.models.add_head = recording("add_head", core.models.add_head)
    core.models.partition_chunks = recording("partition_chunks", core.models.partition_chunks)
    tiers.register(split=2)
    tiers.cloud_stub.EnrolDevice(pb.EnrolDeviceRequest(code=core.enrolment.issue().code, public_key=browser_key(), registration=pb.RegisterDeviceRequest(
        device_name="phone", radio="wifi", model_id="digits_cnn", preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5),
        encoding=pb.FLOAT16)), timeout=30)
    labels, weight = parity_head_weights(tuple(str(d) for d in range(10)))
    added = tiers.cloud_stub.AddHead(pb.HeadSpec(model_id="digits_cnn", name="parity", labels=labels, weight=weight,
                                                 input=pb.HeadSpec.PROBABILITIES), timeout=30)
    assert added.heads == 2  # the heads the model has now, the built-in one included
    assert list(tiers.cloud_stub.FetchPartition(pb.FetchPartitionRequest(model_id="digits_cnn", start=0, stop=1), timeout=30))
    assert [name for name, _ in ran_on] == ["register", "register", "add_head", "partition_chunks"]
    assert all(thread is not tiers.loop.thread for _, thread in ran_on), ran_on


def test_an_edge_joining_or_leaving_places_at_once_not_at_the_next_periodic_check(tmp_path: Path) -> None:
    t = start_tiers(tmp_path, cloud_cfg=CloudConfig(placement_check_s=3600.0, leader_lease_s=7200.0))  # by the clock: not within this test
    scheduler = pb_grpc.SchedulerStub(t.cloud_channel)

    def placement() -> tuple[int, str, int]:
        try:
            p = scheduler.GetPlacement(pb.GetPlacementRequest(), timeout=30)
        except grpc.RpcError:
            return 0, "", 0
        return p.version, p.trigger, len(p.edges)

    try:
        wait_until(lambda: placement()[0] > 0, "the placement the first edge's registration started")
        first = placement()
        assert first[1] == "edge joined"
        other = t.cloud_stub.RegisterEdge(pb.RegisterEdgeRequest(endpoint="127.0.0.1:9", capacity=10), timeout=30).edge_id
        wait_until(lambda: placement()[0] > first[0], "a placement for the second edge")
        joined = placement()
        assert joined[1] == "edge joined"
        t.cloud_stub.DeregisterEdge(pb.DeregisterEdgeRequest(edge_id=other), timeout=30)
        wait_until(lambda: placement()[0] > joined[0], "a placement without the edge that left")
        assert placement()[1] == "edge lost"
    finally:
        stop_tiers(t)


def test_a_stopping_cloud_answers_what_it_read_and_ends_each_edge_stream_cleanly(tmp_path: Path) -> None:
    """A stop drains: it stops reading each edge's stream, answers the frames read, and ends the
    stream with OK (the edge resends the rest to another cloud) rather than cutting it off."""
    t = start_tiers(tmp_path)
    more = threading.Event()
    try:
        frames = cloud_frames(t, 2)

        def requests():
            yield pb.FrameBatch(frames=frames)
            more.wait(60)  # an edge with nothing more to send yet

        call = t.cloud_stub.StreamBatches(requests(), timeout=60)
        assert [r.frame_id for r in next(call).results] == [1, 2]
        t0 = time.monotonic()
        t.loop.run(t.cloud.stop(30))
        assert time.monotonic() - t0 < 10  # it waited for the stream to end, not for its 30 s grace
        assert list(call) == [] and call.code() == grpc.StatusCode.OK
    finally:
        more.set()
        t.cloud_channel.close()
        t.edge_channel.close()
        t.loop.run(t.edge.stop(0))
        t.loop.close()


def test_watches_beyond_a_callers_burst_are_refused_naming_the_limit(tiers: Tiers) -> None:
    """At most 20 watches at once from one caller, then 5 a second: 60 opened together cannot all
    be taken (refilling the rest would take the cloud 8 s)."""
    a = tiers.register(split=2)
    calls = [tiers.cloud_stub.WatchAssignment(pb.GetAssignmentRequest(device_id=a.device_id, token=a.token), timeout=60)
             for _ in range(60)]
    outcomes = []
    try:
        for call in calls:
            try:
                outcomes.append(("OK", next(call).device_id))
            except grpc.RpcError as e:
                outcomes.append((e.code().name, e.details()))
    finally:
        for call in calls:
            call.cancel()
    assert ("OK", a.device_id) in outcomes
    assert set(outcomes) == {("OK", a.device_id),
                             ("RESOURCE_EXHAUSTED", "WatchAssignment: more than 5 a second (burst 20) from 127.0.0.1; retry later")}


def test_a_heartbeat_is_answered_with_the_devices_revoked_lately(tiers: Tiers) -> None:
    a, kept = tiers.register(split=2), tiers.register(split=2)
    pb_grpc.SchedulerStub(tiers.cloud_channel).RevokeDevice(pb.RevokeRequest(device_id=a.device_id), timeout=30)
    ack = tiers.cloud_stub.Heartbeat(pb.EdgeHeartbeat(edge_id=tiers.edge.edge_id, load=0), timeout=30)
    assert list(ack.revoked) == [a.device_id] and kept.device_id not in ack.revoked


def test_a_plaintext_caller_holds_no_certificate_so_no_certificate_quota_counts_its_devices(tmp_path: Path) -> None:
    t = start_tiers(tmp_path, cloud_cfg=CloudConfig(devices_per_certificate=1))
    try:
        assert t.register(split=2).device_id != t.register(split=2).device_id
        assert {d.holder for d in t.cloud.registry.devices(0)} == {""}
    finally:
        stop_tiers(t)


def test_a_bad_enrolment_code_and_a_bad_partition_request_are_refused_naming_the_field(tiers: Tiers) -> None:
    enrolment = pb.EnrolDeviceRequest(code="no-such-code", public_key=browser_key(), registration=pb.RegisterDeviceRequest(
        device_name="phone", radio="wifi", model_id="digits_cnn", preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5), encoding=pb.FLOAT16))
    with pytest.raises(grpc.RpcError) as e:
        tiers.cloud_stub.EnrolDevice(enrolment, timeout=30)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert e.value.details() == "code: unknown enrolment code 'no-such-code'; ask the operator for one"
    with pytest.raises(grpc.RpcError) as e:
        list(tiers.cloud_stub.FetchPartition(pb.FetchPartitionRequest(model_id="digits_cnn", start=2, stop=1), timeout=30))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith("start, stop: expected 0 <= start <= stop <= ")
