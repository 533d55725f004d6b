"""Bad input at each service gets a status naming the field, and nothing else is disturbed: the
same stream's later frames and another device's frames are still answered."""

from __future__ import annotations

import threading
from typing import Callable

import grpc
import pytest

from ecd import zoo
from ecd.manifest import load_heldout
from ecd.v1 import ecd_pb2 as pb
from harness import Tiers, frame_for, start_tiers, stop_tiers

INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION.value[0]
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
UNAUTH = grpc.StatusCode.UNAUTHENTICATED.value[0]

M = zoo.load_manifest("digits_cnn")
X = M.input.preprocess(load_heldout(M).images[:4])


def wrong_shape(f: pb.Frame) -> None:
    f.tensor.shape[:] = [1, 8, 32, 32]
    f.tensor.data = f.tensor.data[: 8 * 32 * 32 * 4]


def wrong_dtype(f: pb.Frame) -> None:
    f.tensor.encoding = pb.ENCODING_UNSPECIFIED


def wrong_bytes(f: pb.Frame) -> None:
    f.tensor.data = f.tensor.data[:-4]


def unknown_version(f: pb.Frame) -> None:
    f.model_version = "0123456789abcdef"


def unknown_model(f: pb.Frame) -> None:
    f.model_id = "lenet9000"


def split_out_of_range(f: pb.Frame) -> None:
    f.split_device = 99


def below_floor(f: pb.Frame) -> None:
    # the tensor is a valid split-1 activation: only the floor (min_split 2) forbids it
    from ecd import codec
    from ecd.transport import serde
    from ecd.partition import Partition

    f.split_device = 1
    f.tensor.CopyFrom(serde.tensor_to_pb(codec.encode(Partition(M, 0, 1).run(X[:1]))))


def oversize(f: pb.Frame) -> None:
    f.tensor.shape[:] = [100_000, 32, 16, 16]  # declares 3.3 GB; never allocated


def unknown_token(f: pb.Frame) -> None:
    f.token = "not-a-token"


CASES: list[tuple[str, Callable[[pb.Frame], None], int, str]] = [
    ("wrong shape", wrong_shape, INVALID, "tensor.shape"),
    ("wrong dtype", wrong_dtype, INVALID, "tensor.encoding"),
    ("wrong byte count", wrong_bytes, INVALID, "tensor.data"),
    ("unknown version", unknown_version, PRECONDITION, "model_version"),
    ("unknown model", unknown_model, PRECONDITION, "model_id"),
    ("split out of range", split_out_of_range, INVALID, "split_device"),
    ("split below the floor", below_floor, PRECONDITION, "min_split"),
    ("oversize batch", oversize, EXHAUSTED, "max_batch"),
    ("unknown device token", unknown_token, UNAUTH, "token"),
]


def other_device_is_served(tiers: Tiers, stop: threading.Event, answered: list[int]) -> None:
    a = tiers.register(split=3, min_split=0, name="bystander")

    def frames():
        i = 0
        while not stop.is_set() or i < 5:
            i += 1
            yield frame_for(a, M, X[:1], i)

    for r in tiers.edge_stub.Stream(frames(), timeout=60):
        assert not r.HasField("error"), r.error.message
        answered.append(r.frame_id)


@pytest.mark.parametrize("case,mutate,code,field", CASES, ids=[c[0] for c in CASES])
def test_bad_frame_at_the_edge(tiers: Tiers, case, mutate, code: int, field: str) -> None:
    stop, answered = threading.Event(), []
    bystander = threading.Thread(target=other_device_is_served, args=(tiers, stop, answered))
    bystander.start()
    a = tiers.register(split=2, min_split=2)
    frames = [frame_for(a, M, X[i : i + 1], i + 1) for i in range(4)]
    mutate(frames[1])
    results = list(tiers.edge_stub.Stream(iter(frames), timeout=60))
    stop.set()
    bystander.join(60)
    by_id = {r.frame_id: r for r in results}
    assert sorted(by_id) == [1, 2, 3, 4]  # every frame answered once
    bad = by_id[2]
    assert bad.HasField("error")
    assert bad.error.code == code, (bad.error.code, bad.error.message)
    assert field in bad.error.message
    for i in (1, 3, 4):
        assert not by_id[i].HasField("error"), by_id[i].error.message
    assert len(answered) >= 5


@pytest.mark.parametrize(
    "mutate,code,field",
    [
        (lambda f: setattr(f, "split_edge", 1), INVALID, "split_edge"),  # below split_device 3
        (unknown_token, UNAUTH, "token"),
        (wrong_bytes, INVALID, "tensor.data"),
        (unknown_version, PRECONDITION, "model_version"),
    ],
    ids=["split_edge below split_device", "token", "byte count", "version"],
)
def test_bad_frame_straight_to_the_cloud(tiers: Tiers, mutate, code: int, field: str) -> None:
    """The cloud does not trust the edge: it checks again."""
    a = tiers.register(split=3)
    frames = [frame_for(a, M, X[i : i + 1], i + 1) for i in range(3)]
    for f in frames:
        f.split_edge = 3
    mutate(frames[0])
    results = list(tiers.cloud_stub.Stream(iter(frames), timeout=60))
    assert results[0].error.code == code and field in results[0].error.message, results[0].error
    assert all(not r.HasField("error") for r in results[1:])


def test_oversize_message_is_refused_by_transport_and_others_go_on(tmp_path) -> None:
    from edge_node.service import EdgeConfig

    t = start_tiers(tmp_path, edge_cfg=EdgeConfig(max_message_bytes=256 * 1024))
    try:
        a = t.register(split=0)
        f = frame_for(a, M, X[:1], 1)
        f.tensor.data = b"\0" * (512 * 1024)
        with pytest.raises(grpc.RpcError) as e:
            list(t.edge_stub.Stream(iter([f]), timeout=30))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        ok = list(t.edge_stub.Stream(iter([frame_for(a, M, X[:1], 2)]), timeout=30))
        assert len(ok) == 1 and not ok[0].HasField("error")
    finally:
        stop_tiers(t)


@pytest.mark.parametrize(
    "request_fields,code,field",
    [
        (dict(preferences=pb.Preferences(w_energy=-1, w_privacy=0.5)), grpc.StatusCode.INVALID_ARGUMENT, "w_energy"),
        (dict(preferences=pb.Preferences(w_energy=0, w_privacy=0)), grpc.StatusCode.INVALID_ARGUMENT, "not both be 0"),
        (dict(preferences=pb.Preferences(w_energy=float("nan"), w_privacy=1)), grpc.StatusCode.INVALID_ARGUMENT, "w_energy"),
        (dict(profile="pi9"), grpc.StatusCode.INVALID_ARGUMENT, "profile"),
        (dict(radio="lora"), grpc.StatusCode.INVALID_ARGUMENT, "radio"),
        (dict(model_id="lenet9000"), grpc.StatusCode.FAILED_PRECONDITION, "model_id"),
        (dict(split_device=9), grpc.StatusCode.INVALID_ARGUMENT, "split_device"),
        (dict(split_device=1, preferences=pb.Preferences(w_energy=1, w_privacy=1, min_split=3)), grpc.StatusCode.FAILED_PRECONDITION, "min_split"),
        (dict(encoding=7), grpc.StatusCode.INVALID_ARGUMENT, "encoding"),
    ],
)
def test_bad_registration(tiers: Tiers, request_fields: dict, code: grpc.StatusCode, field: str) -> None:
    base = dict(device_name="x", profile="pi4", radio="wifi", preferences=pb.Preferences(w_energy=1, w_privacy=1),
                model_id="digits_cnn", split_device=3, encoding=pb.FLOAT32)
    base.update(request_fields)
    with pytest.raises(grpc.RpcError) as e:
        tiers.cloud_stub.RegisterDevice(pb.RegisterDeviceRequest(**base), timeout=10)
    assert e.value.code() == code
    assert field in e.value.details()
    assert tiers.register(split=2).split_device == 2  # the cloud goes on serving


def test_bad_control_calls(tiers: Tiers) -> None:
    stub = tiers.cloud_stub
    with pytest.raises(grpc.RpcError) as e:
        stub.GetAssignment(pb.GetAssignmentRequest(device_id="nobody", token="x"), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "token" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        list(stub.FetchPartition(pb.FetchPartitionRequest(model_id="digits_cnn", start=3, stop=9), timeout=10))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "stop" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        stub.AddHead(pb.HeadSpec(model_id="digits_cnn", name="bad", labels=["a", "b"], weight=[1.0] * 3,
                                 input=pb.HeadSpec.LOGITS), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "weight" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        stub.Heartbeat(pb.EdgeHeartbeat(edge_id="ghost"), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "edge_id" in e.value.details()
