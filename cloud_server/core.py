"""The cloud server's transport-free core: its parts wired together, and the last tier of the data
plane.

Each part is the one writer of its facts and is called by the servicer (``cloud_server.service``)
directly; they take and return :mod:`ecd.types` records, never see gRPC or protobuf, and raise
:mod:`ecd.errors` exceptions naming the field for bad requests:

============================  ===================================================================
``core.models``               :class:`~cloud_server.served.ServedModels`: models, task heads, partition downloads
``core.edges``                :class:`~cloud_server.edges.Edges`: edge registration, ownership, liveness
``core.leases``               :class:`~cloud_server.leases.Leases`: which devices are still present
``core.assignment``           :class:`~cloud_server.assignment.EdgeAssignment`: which edge each device uses
``core.devices``              :class:`~cloud_server.devices.Devices`: registration, preferences, tokens, assignments
``core.enrolment``            :class:`~cloud_server.enrolment.EnrolmentCodes`: one-time codes that enrol browser devices
``core.leader``               :class:`~cloud_server.leader.SchedulerLeader`: whether this replica runs the schedulers
``core.placement``            :class:`~cloud_server.live_placement.LivePlacement`: paper 003's placement, applied
``core.crowdsensing``         :class:`~cloud_server.crowdsensing.Crowdsensing`: campaigns, reputations, site selection
``core.process_many()``       blocks ``[split.edge, n)`` and the task heads, here
============================  ===================================================================
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

import numpy as np

from cloud_server import placement
from cloud_server.assignment import EdgeAssignment
from cloud_server.crowdsensing import Crowdsensing
from cloud_server.devices import Devices
from cloud_server.edges import Edges
from cloud_server.enrolment import EnrolmentCodes
from cloud_server.leader import SchedulerLeader
from cloud_server.leases import Leases
from cloud_server.live_placement import LivePlacement
from cloud_server.registry import Registry
from cloud_server.served import ServedModels
from ecd import codec
from ecd.batching import BatchingConfig, run_rows
from ecd.clock import SYSTEM_CLOCK, Clock
from ecd.config import MiB
from ecd.errors import PermissionDeniedError, RequestError
from ecd.manifest import Manifest
from ecd.split import check_split
from ecd.types import Frame, FrameError, HeadOutput, Result

log = logging.getLogger("ecd.cloud")

MAX_READING = 1e12  # a sensor reading's magnitude; beyond it CrowdPower's squared distances would overflow


class CloudCore:
    def __init__(
        self,
        registry: Registry,
        models: list[Manifest],
        edge_boundary: int | None = None,
        max_tensor_bytes: int = 16 * MiB,
        edge_timeout_s: float = 3.0,
        max_batch: int = codec.MAX_BATCH,
        device_lease_s: float = 600.0,
        placement_method: str = placement.DEFAULT_METHOD,
        placement_activation_cost: float = 5.0,
        on_change: Callable[[], None] | None = None,
        batching: BatchingConfig | None = None,
        metrics: Any = None,
        clock: Clock = SYSTEM_CLOCK,
        leader_lease_s: float = 5.0,
        placement_debounce_s: float = 5.0,
    ):
        if not (math.isfinite(placement_activation_cost) and placement_activation_cost >= 0):
            raise RequestError(f"placement_activation_cost: expected a finite value >= 0, got {placement_activation_cost}")
        self.registry = registry
        self.max_tensor_bytes = max_tensor_bytes
        self.max_batch = max_batch
        self.clock = clock
        self._on_change = on_change or (lambda: None)
        changed = lambda: self._on_change()  # noqa: E731 — the parts call whatever the transport set later
        self.models = ServedModels(registry, models, batching)
        self.edges = Edges(registry, edge_timeout_s, clock)
        self.leases = Leases(registry, device_lease_s, clock)
        self.assignment = EdgeAssignment(registry, self.edges, self.leases, lambda: self.placement.current,
                                         placement_activation_cost, clock)
        self.leader = SchedulerLeader(registry, leader_lease_s)
        self.placement = LivePlacement(registry, self.edges, self.leases, self.assignment, self.leader, placement_method, changed,
                                       clock, placement_debounce_s)
        self.devices = Devices(registry, self.models, self.leases, self.assignment, lambda: self.placement.version,
                               edge_boundary, changed, clock)
        self.enrolment = EnrolmentCodes(clock=clock)
        self.crowdsensing = Crowdsensing(registry, self.edges, self.leases, self.leader, changed, clock)
        self.metrics = metrics

    @property
    def on_change(self) -> Callable[[], None]:
        return self._on_change

    @on_change.setter
    def on_change(self, notify: Callable[[], None]) -> None:
        """The transport's hook, called when assignments may have changed (it wakes their watchers)."""
        self._on_change = notify

    @property
    def metrics(self) -> Any:
        return self._metrics

    @metrics.setter
    def metrics(self, metrics: Any) -> None:
        """The scheduler metrics (:class:`~ecd.metrics.SchedulerMetrics`), published by each part
        where its fact changes; the applied placement's and the device counts are published now."""
        self._metrics = metrics
        self.assignment.metrics = self.placement.metrics = self.crowdsensing.metrics = self.leader.metrics = metrics
        if metrics is not None:
            if self.placement.current is not None:
                metrics.placed(self.placement.current)
            self.assignment.publish()

    # --- data plane ----------------------------------------------------------------------------

    def process(self, frame: Frame, relayed_by: str | None = None) -> Result:
        """Run blocks [split.edge, n) and every head; a bad frame becomes a Result carrying the error.
        ``relayed_by``: the edge certificate whose stream carried the frame (under TLS); the cloud
        answers it only for a device assigned to that edge (or moved from it within the grace)."""
        return self.process_many([frame], relayed_by)[0]

    def process_many(self, frames: list[Frame], relayed_by: str | None = None) -> list[Result]:
        """:meth:`process` for the frames of one message, each checked and answered on its own
        (an error answers that frame alone), the model run once per block range for all of them,
        and a device's token checked once per message."""
        results = [Result(
            device_id=f.device_id, frame_id=f.frame_id, split=f.split,
            device_compute_s=f.device_compute_s, edge_compute_s=f.edge_compute_s,
            uplink_bytes=f.uplink_bytes, edge_to_cloud_bytes=f.wire_bytes,
        ) for f in frames]
        runs: dict[tuple[str, int], list[tuple[int, np.ndarray]]] = {}
        checked: dict[tuple[str, str], Any] = {}  # (device id, token) -> the device, within this message
        for i, frame in enumerate(frames):
            try:
                key = (frame.device_id, frame.token)
                device = checked.get(key) or checked.setdefault(key, self.devices.authenticate(frame.device_id, frame.token))
                if relayed_by is not None and not self.assignment.serves(device, relayed_by):
                    raise PermissionDeniedError(f"device_id: device {frame.device_id} is not assigned to this edge node")
                served = self.models.served(frame.model_id, frame.model_version)
                n = served.manifest.n_blocks
                split = frame.split
                check_split(served.manifest, split.device, device.min_split)
                if not split.device <= split.edge <= n:
                    raise RequestError(f"split_edge: expected {split.device}..{n}, got {split.edge}")
                if frame.task is not None and not (math.isfinite(frame.reading) and abs(frame.reading) <= MAX_READING):
                    raise RequestError(f"reading: expected a finite number within ±{MAX_READING:g}, got {frame.reading}")
                x = codec.decode_at(frame.tensor, served.manifest, split.edge, self.max_tensor_bytes, max_batch=self.max_batch)
            except Exception as e:  # noqa: BLE001 — every frame gets a result; errors.describe classifies
                results[i].error = FrameError.from_exception(e)
                continue
            runs.setdefault((frame.model_id, split.edge), []).append((i, x))
        for (model_id, start), group in runs.items():
            served = self.models[model_id]
            t0 = self.clock.perf_counter()
            outputs = run_rows(served.run, [x for _, x in group], start, served.manifest.n_blocks)
            compute_s = self.clock.perf_counter() - t0
            for (i, _), output in zip(group, outputs):
                self._answer(frames[i], results[i], output, served, compute_s)
        return results

    def _answer(self, frame: Frame, result: Result, output: np.ndarray | Exception, served: Any, compute_s: float) -> None:
        """The heads on the frame's output (its first sample), and its campaign task, if any."""
        try:
            if isinstance(output, Exception):
                raise output
            for head in list(served.heads.values()):
                scores = head.scores(output)
                k = int(np.argmax(scores[0]))
                result.heads.append(HeadOutput(head.name, head.labels[k], k, scores[0].tolist()))
            result.cloud_compute_s = compute_s
            result.output = output[0].astype(np.float32).tolist()
            if frame.task is not None:
                self.crowdsensing.answer_task(frame, result)
        except Exception as e:  # noqa: BLE001 — every frame gets a result; errors.describe classifies
            result.heads = []
            result.error = FrameError.from_exception(e)
