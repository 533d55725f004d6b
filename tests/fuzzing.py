"""A property-based fuzzer for every RPC of the three services (hypothesis), shared by the bounded
run in CI (``tests/integration/test_fuzz.py``) and the longer one (``benchmarks/fuzz.py``).

Requests are protobuf messages drawn from each method's descriptor — random ones, and valid
templates (a real device's id and token, a real frame) with a few fields overwritten by random
values, so the draws reach past the first check. The services run as separate processes on
loopback, as deployed. Invariants after every call:

* it returns, within its deadline (no hang);
* it ends OK or with a status a caller can act on — never UNKNOWN or INTERNAL (an unexpected
  exception in a handler);
* the services stay up, and every ``CANARY_EVERY`` calls a valid frame is answered through the
  edge node (the stream and the other devices are served on);
* their resident memory stays under ``RSS_LIMIT_MB``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf import descriptor as d
from hypothesis import strategies as st

from ecd import codec, zoo
from ecd.manifest import load_heldout
from ecd.partition import Partition
from ecd.transport import serde
from ecd.transport.rpc import wait_healthy
from ecd.v1 import ecd_pb2 as pb

CALL_DEADLINE_S = 20.0
CANARY_EVERY = 25
RSS_LIMIT_MB = 500
BAD = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED}

_INT_RANGES = {
    d.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1), d.FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    d.FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1), d.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1), d.FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    d.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1), d.FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    d.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), d.FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_TEXT = st.one_of(st.text(max_size=40), st.sampled_from(["", "digits_cnn", "fire", "tapp", "coverage", "otacs_ls", "\n",
                                                         "../../etc/passwd", "x" * 5000, "pi4", "wifi"]))


def scalar(f: d.FieldDescriptor) -> st.SearchStrategy:
    if f.type in _INT_RANGES:
        lo, hi = _INT_RANGES[f.type]
        return st.one_of(st.integers(lo, hi), st.integers(-3, 70).filter(lambda v: lo <= v <= hi))
    if f.type in (d.FieldDescriptor.TYPE_DOUBLE, d.FieldDescriptor.TYPE_FLOAT):
        width = 32 if f.type == d.FieldDescriptor.TYPE_FLOAT else 64
        return st.floats(allow_nan=True, allow_infinity=True, width=width)
    if f.type == d.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if f.type == d.FieldDescriptor.TYPE_STRING:
        return _TEXT
    if f.type == d.FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=4096)
    if f.type == d.FieldDescriptor.TYPE_ENUM:
        return st.integers(-2, 8)
    raise TypeError(f.type)


def message(desc: d.Descriptor, depth: int = 0) -> st.SearchStrategy:
    """Any message of type ``desc``: each field set or not, to any value of its type."""
    cls = _class_of(desc)

    @st.composite
    def draw(draw_) -> object:
        msg = cls()
        for f in desc.fields:
            if not draw_(st.booleans()):
                continue
            set_field(msg, f, draw_, depth)
        return msg

    return draw()


def _class_of(desc: d.Descriptor):
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(desc)


def _value(f: d.FieldDescriptor, draw_, depth: int):
    if f.type == d.FieldDescriptor.TYPE_MESSAGE:
        return draw_(message(f.message_type, depth + 1)) if depth < 3 else None
    return draw_(scalar(f))


def set_field(msg, f: d.FieldDescriptor, draw_, depth: int) -> None:
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        key_f, value_f = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
        for _ in range(draw_(st.integers(0, 3))):
            getattr(msg, f.name)[draw_(scalar(key_f))] = draw_(scalar(value_f))
        return
    if f.is_repeated:
        values = [_value(f, draw_, depth) for _ in range(draw_(st.integers(0, 6)))]
        values = [v for v in values if v is not None]
        if f.type == d.FieldDescriptor.TYPE_MESSAGE:
            getattr(msg, f.name).extend(values)
        else:
            getattr(msg, f.name)[:] = values
        return
    value = _value(f, draw_, depth)
    if value is None:
        return
    if f.type == d.FieldDescriptor.TYPE_MESSAGE:
        getattr(msg, f.name).CopyFrom(value)
    else:
        setattr(msg, f.name, value)


def mutated(template, desc: d.Descriptor) -> st.SearchStrategy:
    """``template`` with one to three fields overwritten by any value of their type."""

    @st.composite
    def draw(draw_) -> object:
        msg = type(template)()
        msg.CopyFrom(template)
        fields = draw_(st.lists(st.sampled_from(list(desc.fields)), min_size=1, max_size=3, unique_by=lambda f: f.name))
        for f in fields:
            msg.ClearField(f.name)
            set_field(msg, f, draw_, 1)
        return msg

    return draw()


@dataclass
class Method:
    service: str  # "cloud" or "edge"
    path: str
    request: d.Descriptor
    response: type
    client_streaming: bool
    server_streaming: bool


def methods() -> list[Method]:
    out = []
    for service_name, where in (("CloudServer", "cloud"), ("Scheduler", "cloud"), ("EdgeNode", "edge")):
        for m in pb.DESCRIPTOR.services_by_name[service_name].methods:
            out.append(Method(where, f"/ecd.v1.{service_name}/{m.name}", m.input_type, _class_of(m.output_type),
                              m.client_streaming, m.server_streaming))
    return out


@dataclass
class Cluster:
    """A cloud and an edge node as processes (plaintext, loopback), a registered device, and what
    the fuzzer needs to build valid templates and the canary."""

    tmp: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    channels: dict[str, grpc.Channel] = field(default_factory=dict)
    device: pb.Assignment | None = None
    frame: pb.Frame | None = None

    def start(self) -> Cluster:
        from ecd.launch import _cli, _start

        cloud, c = _start(_cli("cloud-server", "--insecure", "--port", "0", "--metrics-port", "-1", "--db", str(self.tmp / "cloud.sqlite3"),
                               "--registrations-per-s", "1000"), self.tmp / "cloud.log")
        self.procs["cloud"], self.ports["cloud"] = cloud, c["port"]
        wait_healthy(f"127.0.0.1:{c['port']}")
        edge, e = _start(_cli("edge-node", "--insecure", "--cloud", f"127.0.0.1:{c['port']}", "--port", "0", "--metrics-port", "-1",
                              "--model-dir", str(self.tmp / "edge-models")), self.tmp / "edge.log")
        self.procs["edge"], self.ports["edge"] = edge, e["port"]
        wait_healthy(f"127.0.0.1:{e['port']}")
        options = [("grpc.max_receive_message_length", 64 * 2**20), ("grpc.max_send_message_length", 64 * 2**20)]
        self.channels = {k: grpc.insecure_channel(f"127.0.0.1:{p}", options=options) for k, p in self.ports.items()}
        register = self.channels["cloud"].unary_unary("/ecd.v1.CloudServer/RegisterDevice",
                                                      pb.RegisterDeviceRequest.SerializeToString, pb.Assignment.FromString)
        self.device = register(pb.RegisterDeviceRequest(
            device_name="fuzz", profile="pi4", radio="wifi", preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5),
            model_id="digits_cnn", split_device=2, encoding=pb.FLOAT32, position=pb.Position(lat=40.7, lon=-74.0)), timeout=30)
        m = zoo.load_manifest("digits_cnn")
        x = m.input.preprocess(load_heldout(m).images[:1])
        a = self.device
        self.frame = pb.Frame(device_id=a.device_id, frame_id=1, token=a.token, model_id=a.model_id,
                              model_version=a.model_version, split_device=a.split_device,
                              tensor=serde.tensor_to_pb(codec.encode(Partition(m, 0, a.split_device).run(x))))
        return self

    def templates(self) -> dict[str, object]:
        """A valid request per request type, acting on the registered device."""
        a = self.device
        grid = pb.Grid(south_west=pb.Position(lat=40.6, lon=-74.1), north_east=pb.Position(lat=40.8, lon=-73.9), rows=2, cols=2)
        return {
            "Frame": self.frame,
            "RegisterDeviceRequest": pb.RegisterDeviceRequest(device_name="t", profile="pi4", radio="wifi", model_id="digits_cnn",
                                                              preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5), split_device=2),
            "UpdatePreferencesRequest": pb.UpdatePreferencesRequest(device_id=a.device_id, token=a.token, split_device=2,
                                                                    preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5)),
            "GetAssignmentRequest": pb.GetAssignmentRequest(device_id=a.device_id, token=a.token),
            "LocationReport": pb.LocationReport(device_id=a.device_id, token=a.token, position=pb.Position(lat=40.7, lon=-74.0)),
            "FetchPartitionRequest": pb.FetchPartitionRequest(model_id="digits_cnn", start=0, stop=2),
            "HeadSpec": pb.HeadSpec(model_id="digits_cnn", name="fuzz", labels=["a"], weight=[0.1] * 10, input=pb.HeadSpec.LOGITS),
            "CampaignSpec": pb.CampaignSpec(name="fuzz", grid=grid, slots=2, reporters=[1], method="tapp", theta=1.0),
            "SiteRequest": pb.SiteRequest(event="fire", level=5, budget=5, position=pb.Position(lat=40.7, lon=-74.0)),
            "PlaceRequest": pb.PlaceRequest(method="otacs_ls"),
            "RegisterEdgeRequest": pb.RegisterEdgeRequest(endpoint="127.0.0.1:1", capacity=10),
        }

    def call(self, method: Method, requests: list) -> grpc.StatusCode:
        ch = self.channels[method.service]
        ser, de = (lambda m: m.SerializeToString()), method.response.FromString
        try:
            if method.client_streaming and method.server_streaming:
                for _ in ch.stream_stream(method.path, ser, de)(iter(requests), timeout=CALL_DEADLINE_S):
                    pass
            elif method.server_streaming:
                stream = ch.unary_stream(method.path, ser, de)(requests[0], timeout=CALL_DEADLINE_S)
                got = 0
                try:
                    for _ in stream:
                        got += 1
                        if got > 3:  # a watch never ends by itself: three answers are enough
                            stream.cancel()
                            break
                except grpc.RpcError as e:
                    # a watch answers at once, then only when the assignment changes: one that answered
                    # and then reached its deadline worked (it failed the fuzz test when nothing changed)
                    if not (e.code() == grpc.StatusCode.DEADLINE_EXCEEDED and got):
                        raise
            else:
                ch.unary_unary(method.path, ser, de)(requests[0], timeout=CALL_DEADLINE_S)
        except grpc.RpcError as e:
            return e.code()
        return grpc.StatusCode.OK

    def canary(self) -> bool:
        """A valid frame through the edge node is answered without error."""
        frame = pb.Frame()
        frame.CopyFrom(self.frame)
        frame.frame_id = int(time.monotonic_ns() % 2**62)
        stream = self.channels["edge"].stream_stream("/ecd.v1.EdgeNode/Stream", pb.Frame.SerializeToString, pb.Result.FromString)
        results = list(stream(iter([frame]), timeout=CALL_DEADLINE_S))
        return len(results) == 1 and not results[0].HasField("error")

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs.values())

    def rss_mb(self) -> dict[str, float]:
        out = {}
        for name, p in self.procs.items():
            for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[name] = int(line.split()[1]) / 1024
        return out

    def close(self) -> None:
        from ecd.launch import _stop

        for ch in self.channels.values():
            ch.close()
        for name, p in self.procs.items():
            if p.poll() is None:
                _stop(p, name)


@dataclass
class Tally:
    cases: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2)


def request_strategy(method: Method, templates: dict[str, object]) -> st.SearchStrategy:
    template = templates.get(method.request.name)
    any_msg = message(method.request)
    return st.one_of(any_msg, mutated(template, method.request)) if template is not None else any_msg


def check_case(cluster: Cluster, tally: Tally, method: Method, requests: list) -> None:
    """One fuzz case and the invariants; a broken invariant is recorded and raised."""
    status = cluster.call(method, requests)
    tally.cases += 1
    tally.by_status[status.name] = tally.by_status.get(status.name, 0) + 1
    problem = None
    if status in BAD:
        problem = f"{method.path} answered {status.name}"
    elif not cluster.alive():
        problem = f"a service died after {method.path}"
    elif tally.cases % CANARY_EVERY == 0:
        if not cluster.canary():
            problem = f"the canary frame was not answered after {method.path}"
        rss = cluster.rss_mb()
        for k, v in rss.items():
            tally.peak_rss_mb[k] = max(tally.peak_rss_mb.get(k, 0.0), v)
        if any(v > RSS_LIMIT_MB for v in rss.values()):
            problem = f"RSS {rss} over {RSS_LIMIT_MB} MB after {method.path}"
    if problem:
        tally.failures.append(f"{problem}: {[str(r)[:300] for r in requests]}")
        raise AssertionError(problem)


def new_cluster() -> tuple[Cluster, tempfile.TemporaryDirectory]:
    tmp = tempfile.TemporaryDirectory(prefix="ecd-fuzz-")
    return Cluster(Path(tmp.name)).start(), tmp


if __name__ == "__main__":  # pragma: no cover — see benchmarks/fuzz.py
    sys.exit("run benchmarks/fuzz.py or tests/integration/test_fuzz.py")
