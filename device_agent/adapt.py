"""Live re-split: the split re-decided from the measured link and compute, with hysteresis.

The ECD decision (``ecd.split.decide_split``) is made once from profiles: a radio's energy per bit and
a device's power, with no notion of how fast the link is. Here, on every answered frame, the
measured uplink and RTT (:mod:`device_agent.link`) and the measured compute times give each
candidate split ``b >= min_split``:

* a **latency**: device compute (the profile's per-block times scaled by the measured one at the
  current split) + RTT + bits / uplink + a queue (M/D/1: ``rho / (2 (1 - rho))`` transfers, where
  ``rho = fps x bits / uplink``; a split the link cannot carry at ``--fps`` has none: infinite) + the
  edge's and cloud's compute (measured, scaled to the blocks left). A split the device has streamed
  at is judged by the compute times measured there instead (a per-frame overhead does not scale
  with the blocks: without this, two splits each estimated from the other flap);
* an **energy**: the device's CPU power x compute + the radio's ``bits x alpha_u + beta x bits /
  uplink`` (:mod:`device_agent.energy`); the tail is the same at every split and left out.

Neurosurgeon picks the least latency; ECD the least ``w_energy x E_hat + w_privacy x P_priv``. The
adaptive agent does both, Edgent-style: among the splits whose latency is within ``adapt_slack`` of
the least, the one of least ECD utility (``P_priv`` is the decision's measured leakage; ties go to
fewer bytes). It never looks below the user's floor.

**Hysteresis** (no flapping on a link hovering at a threshold): the current split is kept while its
latency is within ``adapt_slack + adapt_margin`` of the least and its utility within ``adapt_margin``
of the best one's; and after a switch none follows for ``adapt_dwell_s``. A switch is asked for
through the re-split path the control panel uses (:meth:`PreferenceControl.request`): the stream
drains at the old split and the new one applies with nothing in flight, so no frame is lost or
sent twice, and the cloud is told.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from device_agent.energy import EnergyMeter
from device_agent.link import LinkEstimate, LinkEstimator
from ecd.manifest import Manifest
from ecd.metrics import ServiceMetrics
from ecd.profiles import DeviceProfile, RadioProfile
from ecd.split import SplitDecision, block_energy
from ecd.types import Result

log = logging.getLogger("ecd.agent")

MIN_SAMPLES = 5  # answered frames at the current split before it is judged
COMPUTE_WINDOW = 21  # compute times: the median of the latest, at the current split (the first frames
# after a re-split load the edge's and cloud's sessions: a mean would carry that warm-up for long)


@dataclass(frozen=True)
class SplitCosts:
    latency_s: np.ndarray  # per split 0..n; inf where the link cannot carry the frame rate
    energy_j: np.ndarray
    utility: np.ndarray  # inf outside the candidates
    bytes: np.ndarray


def split_costs(manifest: Manifest, decision: SplitDecision, device: DeviceProfile, radio: RadioProfile, link: LinkEstimate,
                current: int, device_s: float, remote_s: float, fps: float,
                measured: dict[int, tuple[float, float]] | None = None) -> SplitCosts:
    """Every split's estimated latency, energy and utility on the measured link (module docstring);
    ``measured``: (device, remote) compute seconds at the splits streamed at so far."""
    per_block_s = block_energy(manifest, device)[0] / device.cpu_active_w if device.cpu_active_w > 0 else np.zeros(manifest.n_blocks)
    pred = np.concatenate([[0.0], np.cumsum(per_block_s)])
    scale = device_s / pred[current] if current > 0 and pred[current] > 0 and device_s > 0 else 1.0
    t_dev = pred * scale
    left = pred[-1] - pred
    remote = np.full_like(pred, remote_s if math.isfinite(remote_s) else 0.0)
    if math.isfinite(remote_s) and left[current] >= 0.1 * pred[-1] > 0:  # scaled only from enough blocks to scale from
        remote = remote_s * left / left[current]
    for b, (d, r) in (measured or {}).items():
        if math.isfinite(d) and math.isfinite(r):
            t_dev[b], remote[b] = d, r
    bw = link.uplink_bps if link.uplink_bps > 0 and math.isfinite(link.uplink_bps) else radio.uplink_mbps * 1e6
    rtt = link.rtt_s if math.isfinite(link.rtt_s) else 0.0
    nbytes = np.asarray(decision.bytes_sent, dtype=np.float64)
    tx = 8.0 * nbytes / bw
    rho = fps * tx if fps > 0 else np.zeros_like(tx)
    with np.errstate(divide="ignore", invalid="ignore"):
        queue = np.where(rho < 1, tx * rho / (2 * (1 - rho)), np.inf)
    latency = t_dev + rtt + tx + queue + remote
    energy = device.cpu_active_w * t_dev + 8.0 * nbytes * radio.joules_per_bit + radio.active_base_w * tx
    allowed = np.isfinite(decision.utility)
    e_max = energy[allowed].max() if allowed.any() else 1.0
    p = decision.preferences
    utility = np.where(allowed, p.w_energy * energy / (e_max if e_max > 0 else 1.0) + p.w_privacy * decision.p_priv, np.inf)
    return SplitCosts(latency, energy, utility, nbytes)


def decide_resplit(costs: SplitCosts, current: int, slack: float, margin: float) -> int | None:
    """The split to move to, or None to stay (the hysteresis of the module docstring)."""
    allowed = np.isfinite(costs.utility)
    t = np.where(allowed, costs.latency_s, np.inf)
    t_min = t.min()
    if not math.isfinite(t_min):  # no split keeps up: the one that sends least
        best = int(np.argmin(np.where(allowed, costs.bytes, np.inf)))
        return None if best == current else best
    fast = t <= (1 + slack) * t_min
    u = np.where(fast, costs.utility, np.inf)
    best_u = u.min()
    ties = np.flatnonzero(u == best_u)
    best = int(ties[np.argmin(costs.bytes[ties])])
    keep = allowed[current] and t[current] <= (1 + slack + margin) * t_min and costs.utility[current] <= best_u + margin
    return None if keep or best == current else best


class Adaptation:
    """Fed every answered frame: the measured link and energy (always, for the report and the
    metrics); with ``enabled``, asks ``request(split, reason)`` for a re-split when :func:`decide_resplit`
    says so. Runs in the stream loop's thread; the idle probe in a thread of its own."""

    def __init__(self, core, request: Callable[[int, str], bool], metrics: ServiceMetrics, enabled: bool = False,
                 fps: float = 0.0, slack: float = 0.1, margin: float = 0.1, dwell_s: float = 5.0,
                 clock: Callable[[], float] = time.perf_counter):
        self.core, self.request, self.metrics = core, request, metrics
        self.enabled, self.fps, self.slack, self.margin, self.dwell_s = enabled, fps, slack, margin, dwell_s
        self.clock = clock
        self.link = LinkEstimator(prior_bps=core.radio.uplink_mbps * 1e6, offered_fps=fps)
        self.energy = EnergyMeter(core.profile, core.radio)
        self._device_times: deque[float] = deque(maxlen=COMPUTE_WINDOW)  # at the current split
        self._remote_times: deque[float] = deque(maxlen=COMPUTE_WINDOW)
        self._measured: dict[int, tuple[float, float]] = {}  # split -> (device, remote) median compute seconds
        self._split = -1
        self.last_switch = clock()

    def answered(self, sent_at: float, answered_at: float, result: Result) -> None:
        if not result.ok:
            return
        remote = result.edge_compute_s + result.cloud_compute_s
        self.link.answered(sent_at, answered_at, result.uplink_bytes, remote)
        est = self.link.estimate(answered_at)
        self.energy.add(sent_at, result.device_compute_s, result.uplink_bytes, est.uplink_bps)
        if result.split.device != self._split:  # the compute times belong to one split
            self._judge_split()  # the split left keeps its medians
            self._split = result.split.device
            self._device_times.clear()
            self._remote_times.clear()
        self._device_times.append(result.device_compute_s)
        self._remote_times.append(remote)
        if math.isfinite(est.uplink_bps):
            self.metrics.link_uplink_bps.labels("device").set(est.uplink_bps)
        if math.isfinite(est.rtt_s):
            self.metrics.link_rtt.labels("device").set(est.rtt_s)
        if self.enabled:
            self.consider(answered_at, est)

    def _judge_split(self) -> tuple[float, float]:
        """The current split's median compute times (device, remote), noted in ``_measured`` once
        there are enough. Taken when they are read (a re-split is considered, the split changes),
        not per answered frame: this runs in the thread that takes the answers, at thousands a second."""
        if len(self._device_times) < MIN_SAMPLES:
            return math.nan, math.nan
        medians = statistics.median(self._device_times), statistics.median(self._remote_times)
        self._measured[self._split] = medians
        return medians

    def consider(self, now: float, est: LinkEstimate) -> int | None:
        """Ask for a re-split if the measured link calls for one; returns the split asked for."""
        core = self.core
        if len(self._device_times) < MIN_SAMPLES or now - self.last_switch < self.dwell_s or core.decision is None \
                or core.assignment is None:
            return None
        current = core.assignment.split.device
        if current != self._split:  # a re-split is applying: its frames have not come back yet
            return None
        device_s, remote_s = self._judge_split()
        costs = split_costs(core.manifest, core.decision, core.profile, core.radio, est, current, device_s, remote_s, self.fps,
                            self._measured)
        target = decide_resplit(costs, current, self.slack, self.margin)
        if target is None or not self.request(target, "bandwidth"):
            return None
        self.last_switch = now
        log.warning("[DeviceAgent] re-split %d -> %d (bandwidth: uplink %.2f Mbit/s, RTT %.1f ms; latency %.1f -> %.1f ms)",
                    current, target, est.uplink_bps / 1e6, est.rtt_s * 1e3, costs.latency_s[current] * 1e3,
                    costs.latency_s[target] * 1e3)
        return target

    def start_probe(self, probe: Callable[[], float], stop: threading.Event, every_s: float) -> threading.Thread | None:
        """Probe the RTT every ``every_s`` (a gRPC health check on the edge's channel) until ``stop``."""
        if every_s <= 0:
            return None

        def run() -> None:
            while not stop.wait(every_s):
                try:
                    self.link.probe(probe(), self.clock())
                except Exception as e:  # noqa: BLE001 - a probe that fails says nothing about the link
                    log.debug("[DeviceAgent] link probe failed: %s", e)

        t = threading.Thread(target=run, name="link-probe", daemon=True)
        t.start()
        return t

    def fill(self, report, split_changes: list[dict]) -> None:
        """Write the measured link, the energy and the split changes into a :class:`~device_agent.core.RunReport`."""
        est = self.link.estimate(self.clock())
        report.split_changes = list(split_changes)
        report.energy = self.energy.report()
        report.energy_per_frame_j, report.energy_source = report.energy["per_frame_j"], report.energy["source"]
        report.uplink_mbps_measured, report.rtt_ms_measured = est.uplink_bps / 1e6, est.rtt_s * 1e3

