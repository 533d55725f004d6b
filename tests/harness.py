"""Real services on loopback for tests: grpc.aio servers on a background event loop, port 0."""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import AsyncIterator, Iterator

import grpc
import numpy as np

from cloud_server.config import CloudConfig
from cloud_server.service import RunningCloud, start_cloud
from ecd import codec
from ecd.manifest import MANIFEST_FILENAME, Manifest, sha256_bytes
from ecd.partition import Partition
from ecd.transport import serde
from ecd.transport.rpc import LoopThread, wait_healthy
from ecd.types import Assignment, FileChunk, PartitionRequest
from ecd.v1 import ecd_pb2 as pb
from ecd.v1 import ecd_pb2_grpc as pb_grpc
from edge_node.service import EdgeConfig, RunningEdge, start_edge


@dataclass
class Tiers:
    loop: LoopThread
    cloud: RunningCloud
    edge: RunningEdge
    cloud_channel: grpc.Channel
    edge_channel: grpc.Channel

    @property
    def cloud_stub(self) -> pb_grpc.CloudServerStub:
        return pb_grpc.CloudServerStub(self.cloud_channel)

    @property
    def edge_stub(self) -> pb_grpc.EdgeNodeStub:
        return pb_grpc.EdgeNodeStub(self.edge_channel)

    @property
    def cloud_target(self) -> str:
        return f"127.0.0.1:{self.cloud.port}"

    def register(self, split: int, min_split: int = 0, name: str = "t", encoding: int = pb.FLOAT32) -> pb.Assignment:
        return self.cloud_stub.RegisterDevice(
            pb.RegisterDeviceRequest(
                device_name=name, profile="pi4", radio="wifi",
                preferences=pb.Preferences(w_energy=0.5, w_privacy=0.5, min_split=min_split),
                model_id="digits_cnn", split_device=split, encoding=encoding,
            ),
            timeout=30,
        )


def start_tiers(tmp: Path, cloud_cfg: CloudConfig | None = None, edge_cfg: EdgeConfig | None = None) -> Tiers:
    loop = LoopThread()
    cloud = loop.run(start_cloud(replace(cloud_cfg or CloudConfig(), db=str(tmp / "cloud.sqlite3"), port=0, metrics_port=0)))
    edge = loop.run(start_edge(replace(edge_cfg or EdgeConfig(), cloud=f"127.0.0.1:{cloud.port}", port=0, metrics_port=0,
                                       model_dir=str(tmp / "edge-models"), heartbeat_s=0.5)))
    wait_healthy(f"127.0.0.1:{cloud.port}")
    wait_healthy(f"127.0.0.1:{edge.port}")
    return Tiers(loop, cloud, edge, grpc.insecure_channel(f"127.0.0.1:{cloud.port}"), grpc.insecure_channel(f"127.0.0.1:{edge.port}"))


def stop_tiers(t: Tiers) -> None:
    t.cloud_channel.close()
    t.edge_channel.close()
    t.loop.run(t.edge.stop(0))
    t.loop.run(t.cloud.stop(0))
    t.loop.close()


@contextmanager
def cloud_replicas(cfg: CloudConfig, n: int = 2) -> Iterator[tuple[LoopThread, list[RunningCloud]]]:
    """``n`` clouds started from ``cfg`` (one registry: replicas) on one loop, each healthy; at the
    end the ones still in the list are stopped (a test that stops one itself takes it out)."""
    loop = LoopThread()
    clouds = [loop.run(start_cloud(cfg)) for _ in range(n)]
    try:
        for c in clouds:
            wait_healthy(f"127.0.0.1:{c.port}")
        yield loop, clouds
    finally:
        for c in clouds:
            loop.run(c.stop(0))
        loop.close()


def frame_for(a: pb.Assignment, m: Manifest, x: np.ndarray, frame_id: int, encoding: int = pb.FLOAT32) -> pb.Frame:
    """A device's frame: blocks [0, b_d) of ``x`` run here, then encoded. With ``UINT8_IMAGE``,
    ``x`` is the raw uint8 image batch, sent as it is (split 0)."""
    if encoding == pb.UINT8_IMAGE:
        tensor = codec.encode_image(x)
    else:
        tensor = codec.encode(Partition(m, 0, a.split_device).run(x), serde.ENCODING_FROM_PB[encoding])
    return pb.Frame(
        device_id=a.device_id, frame_id=frame_id, token=a.token, model_id=a.model_id,
        model_version=a.model_version, split_device=a.split_device, tensor=serde.tensor_to_pb(tensor),
    )


def cloud_frames(t: Tiers, n: int, token: str | None = None) -> list[pb.Frame]:
    """``n`` (at most 5) frames of a new digits_cnn device as an edge relays them to the cloud: the
    device ran blocks [0, 3), the edge none (split_edge 3)."""
    from ecd import zoo
    from ecd.manifest import load_heldout

    m = zoo.load_manifest("digits_cnn")
    x = m.input.preprocess(load_heldout(m).images[:n])
    a = t.register(split=3)
    frames = [frame_for(a, m, x[i : i + 1], i + 1) for i in range(n)]
    for f in frames:
        f.split_edge = 3
        if token is not None:
            f.token = token
    return frames


def compact(frames: list[pb.Frame]) -> list[pb.Frame]:
    """One device stream as a revision-2 agent sends it: the first frame complete (it binds the
    stream), the others with only what changes."""
    first = pb.Frame()
    first.CopyFrom(frames[0])
    first.protocol_revision = 2
    return [first, *(serde.compact_frame_to_pb(f) for f in frames[1:])]


class StreamingAgent:
    """A device agent streaming held-out images without end in a thread, for tests that change it
    while it runs. ``stop()`` ends the stream (the frames in flight are answered) and returns the
    outcomes, one per frame."""

    def __init__(self, tiers: Tiers, tmp: Path, fps: float = 150.0, panel: bool = False, **cfg):
        import threading

        from device_agent.agent import AgentConfig, DeviceAgent
        from device_agent.sources import open_source

        self.agent = DeviceAgent(AgentConfig(cloud=tiers.cloud_target, model_dir=str(tmp / "agent-models"), fps=fps,
                                             frames=0, **cfg))
        self.agent.connect()
        self.panel = None
        if panel:
            from device_agent.agent import start_panel

            self.panel = start_panel(self.agent, replace(self.agent.cfg, panel_port=0))
        self.outcomes: list = []
        self.error: BaseException | None = None
        samples = open_source("heldout", "digits_cnn", self.agent.manifest.input, 0)

        def stream() -> None:
            try:
                self.outcomes = self.agent.run(samples)
            except BaseException as e:  # noqa: BLE001 — re-raised by stop()
                self.error = e

        self.thread = threading.Thread(target=stream, name="test-agent", daemon=True)
        self.thread.start()

    def wait_for(self, predicate, timeout_s: float = 60.0) -> None:
        """Block until ``predicate(agent)`` holds (polling the agent's own counters)."""
        import time

        deadline = time.monotonic() + timeout_s
        while not predicate(self.agent):
            if self.error is not None:
                raise self.error
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for the agent; tally {self.agent.tally.snapshot()}")
            time.sleep(0.02)

    def stop(self) -> list:
        self.agent.stop()
        self.thread.join(60)
        if self.panel is not None:
            self.panel.close()
            self.panel = None
        self.agent.close()
        if self.error is not None:
            raise self.error
        assert not self.thread.is_alive(), "the agent did not stop"
        return self.outcomes


def recommended(w_privacy: float, min_split: int = 0, model: str = "digits_cnn") -> int:
    """The split the decision recommends for a Pi 4 on WiFi (the agents' defaults in these tests)."""
    from ecd import zoo
    from ecd.profiles import load_device, load_radio
    from ecd.split import Preferences, decide_split

    m = zoo.load_manifest(model)
    return decide_split(m, load_device("pi4"), load_radio("wifi"), Preferences(1 - w_privacy, w_privacy, min_split)).recommended


class LocalCloud:
    """The edge's CloudClient without a network: one assignment, the bundled model's files."""

    def __init__(self, manifest: Manifest, assignment: Assignment) -> None:
        self.manifest = manifest
        self.assignment = assignment

    async def get_assignment(self, device_id: str, token: str, holder: str = "") -> Assignment:
        return self.assignment

    async def fetch_partition(self, request: PartitionRequest) -> AsyncIterator[FileChunk]:
        m = self.manifest
        for path in [m.directory / MANIFEST_FILENAME] + [m.block_path(b) for b in m.blocks[request.start : request.stop]]:
            data = path.read_bytes()
            yield FileChunk(path.name, sha256_bytes(data), len(data), 0, data)


async def settle() -> None:
    """Let every ready task run until each waits on something (no timers: the loop is idle)."""
    for _ in range(100):
        await asyncio.sleep(0)


def wait_until(condition, what: str = "the condition", timeout_s: float = 30.0) -> None:
    """Poll ``condition`` (state other threads or processes change) until it holds; fail after ``timeout_s``."""
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.02)


class Run:
    """``agent.run(samples)`` in a thread; ``outcomes`` once it ends (``join``)."""

    def __init__(self, agent, samples) -> None:
        import threading

        self.agent, self.outcomes = agent, []
        self.thread = threading.Thread(target=lambda: self.outcomes.extend(agent.run(samples)), name="test-run", daemon=True)
        self.thread.start()

    def wait_answered(self, n: int, timeout_s: float = 60.0) -> None:
        wait_until(lambda: self.agent.status().answered >= n or not self.thread.is_alive(), f"{n} answers", timeout_s)
        assert self.thread.is_alive() or self.agent.status().answered >= n, "the agent stopped streaming"

    def join(self, timeout_s: float = 120.0) -> list:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "the agent never finished"
        return self.outcomes
