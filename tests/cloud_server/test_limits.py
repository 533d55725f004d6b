"""Limits on every control call, rate limits per caller, safe storage and token revocation:
the oversized calls of issue 13 are refused at once with a status naming the field, and the
services serve on."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import grpc
import pytest

from cloud_server.registry import Registry, hash_token, token_matches
from cloud_server.config import CloudConfig
from cloud_server.scheduler_service import SchedulerClient
from device_agent.agent import AgentConfig, DeviceAgent
from device_agent.sources import heldout
from ecd.errors import ConfigError, LimitError, RequestError
from ecd.limits import RateLimiter, check_name, printable
from ecd.v1 import ecd_pb2 as pb
from harness import Tiers, start_tiers, stop_tiers


def test_names_are_short_and_printable_and_logged_safely() -> None:
    assert check_name("pi4-garden", "device_name") == "pi4-garden"
    with pytest.raises(RequestError, match="device_name: control characters are not allowed"):
        check_name("ok\nINFO forged log line", "device_name")
    with pytest.raises(RequestError, match="device_name: at most 64 characters, got 65"):
        check_name("x" * 65, "device_name")
    with pytest.raises(RequestError, match="must not be empty"):
        check_name("", "device_name")
    assert printable("a\nb\x1b[31m") == "a\\nb\\x1b[31m"
    assert printable("y" * 100, 10) == "y" * 10 + "…"


def test_a_rate_limit_admits_a_burst_then_the_rate() -> None:
    limit = RateLimiter(per_s=2.0, burst=3.0, what="registrations")
    for _ in range(3):
        limit.take("10.0.0.9", now=100.0)
    with pytest.raises(LimitError, match=r"registrations: more than 2 a second \(burst 3\) from 10.0.0.9"):
        limit.take("10.0.0.9", now=100.0)
    limit.take("10.0.0.8", now=100.0)  # another caller has its own bucket
    limit.take("10.0.0.9", now=100.5)  # one more after half a second at 2/s
    with pytest.raises(LimitError):
        limit.take("10.0.0.9", now=100.5)


def test_the_registry_file_is_private_and_keeps_only_token_hashes(tmp_path: Path) -> None:
    path = tmp_path / "cloud.sqlite3"
    registry = Registry(str(path))
    d = registry.add_device(token=hash_token("the-secret"), name="d", profile="pi4", radio="wifi", w_energy=0.5,
                            w_privacy=0.5, min_split=0, model_id="m", model_version="v", split_device=1, split_edge=2,
                            encoding="float32", edge_id="")
    registry.close()
    for name in ("cloud.sqlite3", "cloud.sqlite3-wal", "cloud.sqlite3-shm"):
        if (tmp_path / name).exists():
            assert oct((tmp_path / name).stat().st_mode & 0o777) == "0o600", name
    with sqlite3.connect(path) as db:
        stored = db.execute("SELECT token FROM devices WHERE device_id = ?", (d.device_id,)).fetchone()[0]
    assert stored.startswith("sha256:") and "the-secret" not in stored
    assert token_matches(stored, "the-secret") and not token_matches(stored, "the-secreT")
    assert not token_matches("revoked", "revoked")


@pytest.fixture
def limited(tmp_path: Path):
    t = start_tiers(tmp_path, cloud_cfg=CloudConfig(registrations_per_s=2.0))
    yield t
    stop_tiers(t)


def _code(call) -> tuple[grpc.StatusCode, str, float]:
    t0 = time.perf_counter()
    try:
        call()
    except grpc.RpcError as e:
        return e.code(), e.details(), time.perf_counter() - t0
    return grpc.StatusCode.OK, "", time.perf_counter() - t0


def _registration(**kw) -> pb.RegisterDeviceRequest:
    fields = dict(device_name="d", profile="pi4", radio="wifi", preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5),
                  model_id="digits_cnn", split_device=2, encoding=pb.FLOAT32)
    return pb.RegisterDeviceRequest(**{**fields, **kw})


def test_oversized_control_calls_are_refused_quickly_and_the_cloud_serves_on(limited: Tiers) -> None:
    stub = limited.cloud_stub
    cases = [
        ("AddHead with 10^6 labels", lambda: stub.AddHead(pb.HeadSpec(model_id="digits_cnn", name="huge", labels=["x"] * 10**6,
                                                                       weight=[0.0], input=pb.HeadSpec.LOGITS), timeout=30),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "labels: at most 1000"),
        # bigger than any frame the cloud takes: refused by gRPC from its length prefix, before it is buffered
        ("a 50 MB profile", lambda: stub.RegisterDevice(_registration(profile="#" * (50 * 2**20)), timeout=30),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max"),
        ("a 1 MB profile", lambda: stub.RegisterDevice(_registration(profile="#" * 2**20), timeout=30),
         grpc.StatusCode.RESOURCE_EXHAUSTED, "profile:"),
        ("1-byte chunks", lambda: list(stub.FetchPartition(pb.FetchPartitionRequest(model_id="digits_cnn", stop=6, max_chunk_bytes=1), timeout=30)),
         grpc.StatusCode.INVALID_ARGUMENT, "max_chunk_bytes"),
        ("a 10 MB name", lambda: stub.RegisterDevice(_registration(device_name="n" * 10**7), timeout=30),
         grpc.StatusCode.INVALID_ARGUMENT, "device_name: at most 64"),
        ("a newline in a name", lambda: stub.RegisterDevice(_registration(device_name="ok\nINFO forged"), timeout=30),
         grpc.StatusCode.INVALID_ARGUMENT, "device_name: control characters"),
        ("a label with a newline", lambda: stub.AddHead(pb.HeadSpec(model_id="digits_cnn", name="nl", labels=["a\nb"],
                                                                     weight=[0.0] * 10, input=pb.HeadSpec.LOGITS), timeout=30),
         grpc.StatusCode.INVALID_ARGUMENT, "labels[0]: control characters"),
    ]
    for what, call, code, field in cases:
        got, details, seconds = _code(call)
        assert (got, field in details) == (code, True), (what, got, details)
        assert seconds < 5.0, (what, seconds)
    # registrations beyond the caller's burst (5 x 2/s here) are refused, the others served
    codes = [_code(lambda: stub.RegisterDevice(_registration(), timeout=30))[0] for _ in range(30)]
    assert codes.count(grpc.StatusCode.OK) <= 12 and grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    # the cloud serves on: a frame through the edge is answered
    assert stub.ListHeads(pb.ListHeadsRequest(model_id="digits_cnn"), timeout=10).heads[0].name == "class"


def test_a_revoked_token_is_refused_by_the_cloud_at_once_and_by_the_edge_within_a_heartbeat(tiers: Tiers, tmp_path: Path) -> None:
    agent = DeviceAgent(AgentConfig(cloud=tiers.cloud_target, model_dir=str(tmp_path / "a")))
    client = SchedulerClient(tiers.cloud_target)
    try:
        agent.connect()
        assert all(o.result.ok for o in agent.run(heldout("digits_cnn", 5)))  # the edge has cached its assignment
        a = agent.assignment
        client.revoke(a.device_id)
        with pytest.raises(grpc.RpcError) as e:
            tiers.cloud_stub.GetAssignment(pb.GetAssignmentRequest(device_id=a.device_id, token=a.token), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        deadline = time.monotonic() + 10 * 0.5  # ten of the harness edge's heartbeats
        while True:  # the edge refuses it itself once its heartbeat named the device
            outcome = agent.run(heldout("digits_cnn", 1))[0]
            assert not outcome.result.ok  # the cloud refuses it in any case
            if tiers.edge.core.frames_seen and a.device_id not in tiers.edge.core._assignments:
                break
            assert time.monotonic() < deadline, "the edge still holds the revoked device's assignment"
        assert outcome.result.error.status == "UNAUTHENTICATED"
        with pytest.raises(Exception, match="NOT_FOUND: device_id"):
            client.revoke("nobody")
    finally:
        client.close()
        agent.close()


def test_weights_whose_sum_overflows_are_refused(limited: Tiers) -> None:
    got, details, _ = _code(lambda: limited.cloud_stub.RegisterDevice(
        _registration(preferences=pb.Preferences(w_energy=1e308, w_privacy=1e308)), timeout=10))
    assert got == grpc.StatusCode.INVALID_ARGUMENT and "their sum must be finite" in details


def test_a_profile_toml_missing_a_field_is_refused_naming_profile() -> None:
    """Found by benchmarks/fuzz_atheris.py: the refusal did not start with the field it is about."""
    from cloud_server.devices import parse_profile
    from ecd.errors import RequestError

    with pytest.raises(RequestError, match="^profile: device profile in the request: missing field 'name'"):
        parse_profile("")


def test_a_frame_limit_below_a_served_models_activation_is_a_config_error() -> None:
    from cloud_server.config import check_frame_limit
    from ecd import zoo

    m = zoo.load_manifest("digits_cnn")
    largest = max(m.activation_bytes(b) for b in range(m.n_blocks + 1))
    check_frame_limit([m], largest)
    with pytest.raises(ConfigError, match=rf"^max_tensor_bytes: digits_cnn sends {largest} bytes for one image at split \d, "
                                          rf"more than {largest - 1}; raise max_tensor_bytes$"):
        check_frame_limit([m], largest - 1)
