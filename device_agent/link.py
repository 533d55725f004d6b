"""The uplink as the device measures it: bandwidth and round-trip time from its own frames.

Nothing here sends a byte of its own except the optional idle probe (a gRPC health check on the
edge's channel, :meth:`LinkEstimator.probe`). Every answered frame is a sample: it was sent at
``sent_at`` with ``nbytes`` on the wire and answered at ``answered_at``, and its Result says how long
the edge node and the cloud computed on it. Then (times on one clock):

* **network time** = answered_at - sent_at - remote compute: one RTT plus the frame's transfer, plus
  any wait behind earlier frames.
* **RTT** = the least network time, or probe round trip, of the last ``rtt_window_s`` seconds (a
  transfer only adds to it; BBR's min-RTT filter).
* **a saturated link** shows itself: frames wait (network time well above the RTT) and their answers
  come back clocked by the bottleneck, each one transfer after the previous. The link counts as
  saturated once most recent frames queued (an EWMA of the queued flag above one half: a burst of
  late answers from a busy CPU makes a few frames look queued, a full link nearly all of them) and,
  with frames paced at ``offered_fps``, the answers fall behind that rate (by more than 5 % over
  the last ``rate_window_s``: frames that wait for a busy CPU but come back at the rate they are
  sent do not make a slow link, and sending fewer bytes would not help them) and the queued answers
  come evenly clocked (the median of their bits / gap within twice the rate acknowledged: a stalled
  CPU hands answers over in bunches, a bottleneck link one transfer apart). The **bandwidth** is
  then the bytes acknowledged per second over that window.
* **a link that is not saturated** says only that it is fast enough: a small frame's transfer hides
  in the jitter of the answer path (a 1 kB frame takes 0.2 ms at 50 Mbit/s). Then the estimate is
  the larger of the radio profile's nominal uplink (``prior_bps``) and the frames' own lower bound
  (bits / time above the RTT).
* **a large frame measures the link even when it is not saturated**: one the nominal rate would send
  in ``MEASURABLE_S`` or more (50 kB at 6 Mbit/s: 67 ms) spends that long, or longer, on the wire, far
  above the answer path's jitter; its bits / time above the RTT is then the link's rate (an EWMA of
  such frames), whether above or below the nominal figure. The RTT it is measured above is the least
  round trip of the probes and small frames only: a large frame's own round trip holds its transfer,
  and with only those seen, a 1.1 Mbit/s link under a few ms of jitter would read as ~90 Mbit/s. No
  probe or small frame seen, or a frame no more than ``QUEUED_S`` above that RTT: no measure. Without this, a slow link that a device's
  large frames do not fill at its frame rate (mobilenet_v2 at split 8, 2 frames/s on a 1.1 Mbit/s
  3G-like link: 0.8 Mbit/s offered) kept the nominal 6 Mbit/s, and the device never left a split that
  took 0.36 s a frame to send.

A measured bottleneck is remembered for ``forget_s`` after its last saturated frame: a device that
re-split to send less no longer fills the link, and would otherwise go back at once to the split
that did. After that the nominal figure holds again, and the split that saturated is tried again
(DADS re-partitions the same way, from the bandwidth it sees).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

MIN_TRANSFER_S = 0.5e-3  # below this a transfer time is jitter, counted as this
QUEUED_S = 2e-3  # a frame that waited more than this beyond the RTT ...
QUEUED_RATIO = 2.0  # ... and more than twice the gap since the previous answer queued behind it
QUEUED_ALPHA = 0.1  # the EWMA of the queued flag (about the last 10 frames)
EVEN = 2.0  # queued answers this close to the acknowledged rate (median bits / gap) are a link's clock
KEEPING_UP = 0.95  # answers at this fraction of the offered rate or more: the link carries the load
MEASURABLE_S = 0.02  # a frame the nominal rate sends in this long or more measures the link (far above jitter)


@dataclass(frozen=True)
class LinkEstimate:
    uplink_bps: float  # NaN until a frame was answered (and no prior)
    rtt_s: float  # NaN until a frame was answered or a probe came back
    samples: int  # frames answered so far
    saturated: bool  # the bandwidth is a measured bottleneck (not the nominal figure)


class LinkEstimator:
    """The single writer of the measured link (the stream loop's thread feeds it; a probe thread too)."""

    def __init__(self, prior_bps: float = math.nan, alpha: float = 0.3, rtt_window_s: float = 10.0, forget_s: float = 60.0,
                 offered_fps: float = 0.0, rate_window_s: float = 5.0):
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha: expected (0, 1], got {alpha}")
        self.prior_bps, self.alpha, self.rtt_window_s, self.forget_s = prior_bps, alpha, rtt_window_s, forget_s
        self.offered_fps, self.rate_window_s = offered_fps, rate_window_s
        self._answers: deque[tuple[float, float]] = deque()  # (when, bits) of the last rate_window_s
        self._window_bits = 0.0  # their sum
        self._clocked: deque[float] = deque(maxlen=21)  # bits / gap of the latest queued answers
        self._lock = threading.Lock()
        self._rtts: deque[tuple[float, float]] = deque()  # (when, a round trip's upper bound), minimum first
        self._bare_rtts: deque[tuple[float, float]] = deque()  # the same of probes and small frames only
        self._saturated_bps = math.nan  # bits acknowledged per second when the link was last saturated
        self._saturated_at = -math.inf
        self._queued = 0.0  # EWMA of "this frame queued"
        self._free_bps = math.nan  # EWMA of the other frames' lower bounds
        self._measured_bps = math.nan  # EWMA of the large frames' rates (MEASURABLE_S), when not queued
        self._measured_at = -math.inf
        self._last_answer = -math.inf
        self.samples = 0

    def probe(self, rtt_s: float, now: float) -> None:
        """An idle probe's round trip, measured at ``now``."""
        with self._lock:
            self._rtt_sample(self._rtts, now, rtt_s)
            self._rtt_sample(self._bare_rtts, now, rtt_s)

    def answered(self, sent_at: float, answered_at: float, nbytes: int, remote_compute_s: float) -> None:
        """One frame of ``nbytes`` sent at ``sent_at`` and answered at ``answered_at``."""
        with self._lock:
            network = max(answered_at - sent_at - max(remote_compute_s, 0.0), 0.0)
            bits, a = 8.0 * nbytes, self.alpha
            large = bits >= MEASURABLE_S * self.prior_bps  # NaN prior: never
            self._rtt_sample(self._rtts, answered_at, network)
            if not large:
                self._rtt_sample(self._bare_rtts, answered_at, network)
            waited = network - self._rtt(self._rtts, answered_at)
            gap = answered_at - self._last_answer
            self._last_answer = max(self._last_answer, answered_at)
            self._answers.append((answered_at, bits))
            self._window_bits += bits
            while self._answers[0][0] < answered_at - self.rate_window_s:
                self._window_bits -= self._answers.popleft()[1]
            queued = waited > QUEUED_S and waited > QUEUED_RATIO * gap
            self._queued = QUEUED_ALPHA * queued + (1 - QUEUED_ALPHA) * self._queued
            if queued:  # the answers may be the bottleneck's clock
                self._clocked.append(bits / max(gap, 1e-9))
                if self._queued > 0.5 and not self._keeping_up():
                    span = self._answers[-1][0] - self._answers[0][0]
                    acked = (self._window_bits - self._answers[0][1]) / span
                    if sorted(self._clocked)[len(self._clocked) // 2] <= EVEN * acked:
                        self._saturated_bps = acked
                        self._saturated_at = answered_at
            elif large:  # its transfer is the link's rate, above the RTT of what sends no transfer to speak of
                transfer = network - self._rtt(self._bare_rtts, answered_at)
                if transfer > QUEUED_S:  # else (or no probe nor small frame seen: NaN) no measure
                    rate = bits / transfer
                    self._measured_bps = rate if math.isnan(self._measured_bps) else a * rate + (1 - a) * self._measured_bps
                    self._measured_at = answered_at
            else:
                lower = bits / max(waited, MIN_TRANSFER_S)
                self._free_bps = lower if math.isnan(self._free_bps) else a * lower + (1 - a) * self._free_bps
            self.samples += 1

    def estimate(self, now: float) -> LinkEstimate:
        with self._lock:
            saturated = now - self._saturated_at <= self.forget_s
            if saturated:
                bps = self._saturated_bps
            elif now - self._measured_at <= self.forget_s:
                bps = self._measured_bps
            else:
                known = [v for v in (self.prior_bps, self._free_bps) if not math.isnan(v)]
                bps = max(known) if known else math.nan
            return LinkEstimate(bps, self._rtt(self._rtts, now), self.samples, saturated)

    def _keeping_up(self) -> bool:
        """Paced frames are answered at (nearly) the rate they are offered."""
        if len(self._answers) < 2:
            return True
        span = self._answers[-1][0] - self._answers[0][0]
        if span < self.rate_window_s / 2:  # too few answers yet to tell a rate
            return True
        if self.offered_fps <= 0:  # unpaced: queued answers are all there is to go by
            return False
        return (len(self._answers) - 1) / span >= KEEPING_UP * self.offered_fps

    @staticmethod
    def _rtt_sample(rtts: deque[tuple[float, float]], now: float, rtt_s: float) -> None:
        while rtts and rtts[-1][1] >= rtt_s:  # a monotone deque: the window's minimum first
            rtts.pop()
        rtts.append((now, rtt_s))

    def _rtt(self, rtts: deque[tuple[float, float]], now: float) -> float:
        while len(rtts) > 1 and rtts[0][0] < now - self.rtt_window_s:
            rtts.popleft()
        return rtts[0][1] if rtts else math.nan
