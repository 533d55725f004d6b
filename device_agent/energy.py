"""The device's energy per frame, from what it measured: compute time, bytes sent, the link's speed.

Per answered frame (the model; ``ecd/profile_data``: the device profile's ``cpu_active_w``, the
radio's Huang et al. 2012 constants):

* **CPU**: ``cpu_active_w`` x the frame's measured device compute time (its blocks, the defence, the
  encoding: ``Frame.device_compute_s``);
* **radio, sending**: Huang's linear power model ``P = alpha_u x throughput + beta`` held for
  ``bits / bandwidth`` seconds gives ``bits x alpha_u + beta x bits / bandwidth``: the per-bit cost
  the split decision uses, plus the radio's base power for as long as the measured link takes;
* **radio, tail**: after a transfer the radio stays up for ``tail_s`` at ``tail_w``; a frame sent
  before the tail ran out cuts it short (it pays ``tail_w`` x the gap), one sent later pays the
  whole tail (a stream at 30 frames/s never lets LTE's 11.6 s tail end).

Where the machine reports its own energy, that is used for the per-frame figure instead, and the
model's sums are reported beside it: RAPL (``/sys/class/powercap/intel-rapl:0/energy_uj``: the
counter's rise over the run), else a battery's ``power_now`` (``/sys/class/power_supply``: sampled
about once a second, its mean x the time from the first frame to the last). Either is the whole
machine's: other processes count too. The report says which was used (``source``: rapl,
power_supply or model).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

from ecd.profiles import DeviceProfile, RadioProfile

SYS = Path("/sys/class")


def energy_source(sys_class: Path = SYS) -> str:
    """"rapl", "power_supply" or "model": what this machine can tell about its own energy."""
    if (sys_class / "powercap" / "intel-rapl:0" / "energy_uj").is_file():
        return "rapl"
    supplies = sys_class / "power_supply"
    if supplies.is_dir() and any((d / "power_now").is_file() for d in supplies.iterdir()):
        return "power_supply"
    return "model"


def read_energy_j(source: str, sys_class: Path = SYS) -> float:
    """The machine's energy counter in joules (RAPL); NaN where there is none."""
    if source != "rapl":
        return math.nan
    try:
        return int((sys_class / "powercap" / "intel-rapl:0" / "energy_uj").read_text()) / 1e6
    except (OSError, ValueError):
        return math.nan


def read_power_w(sys_class: Path = SYS) -> float:
    """A battery's power draw now, in watts (the first ``power_now``); NaN where there is none."""
    try:
        for d in sorted((sys_class / "power_supply").iterdir()):
            if (d / "power_now").is_file():
                return int((d / "power_now").read_text()) / 1e6
    except (OSError, ValueError):
        pass
    return math.nan


@dataclass(frozen=True)
class FrameEnergy:
    cpu_j: float
    send_j: float
    tail_j: float

    @property
    def total_j(self) -> float:
        return self.cpu_j + self.send_j + self.tail_j


def frame_energy(device: DeviceProfile, radio: RadioProfile, compute_s: float, nbytes: int, uplink_bps: float,
                 gap_s: float) -> FrameEnergy:
    """One frame's joules: ``compute_s`` on the CPU, ``nbytes`` sent at ``uplink_bps`` (NaN: the
    per-bit part only), ``gap_s`` since the previous transfer (inf: the first)."""
    bits = 8.0 * nbytes
    on_air = bits / uplink_bps if uplink_bps > 0 and math.isfinite(uplink_bps) else 0.0
    tail = radio.tail_w * min(gap_s, radio.tail_s)
    return FrameEnergy(device.cpu_active_w * compute_s, bits * radio.joules_per_bit + radio.active_base_w * on_air, tail)


class EnergyMeter:
    """The run's energy, summed per answered frame (the single writer of those sums)."""

    def __init__(self, device: DeviceProfile, radio: RadioProfile, sys_class: Path = SYS):
        self.device, self.radio = device, radio
        self.source = energy_source(sys_class)
        self._sys_class = sys_class
        self._start_j = read_energy_j(self.source, sys_class)
        self._lock = threading.Lock()
        self.frames = 0
        self.compute_s = 0.0
        self.bytes = 0
        self.cpu_j = self.send_j = self.tail_j = 0.0
        self._last_sent = self._first_sent = -math.inf
        self._power: list[float] = []  # power_now samples, about one a second
        self._sampled_at = -math.inf

    def add(self, sent_at: float, compute_s: float, nbytes: int, uplink_bps: float) -> FrameEnergy:
        with self._lock:
            gap = sent_at - self._last_sent if sent_at >= self._last_sent else 0.0
            self._last_sent = max(self._last_sent, sent_at)
            if not self.frames:
                self._first_sent = sent_at
            if self.source == "power_supply" and sent_at - self._sampled_at >= 1.0:
                self._sampled_at = sent_at
                if math.isfinite(w := read_power_w(self._sys_class)):
                    self._power.append(w)
            e = frame_energy(self.device, self.radio, compute_s, nbytes, uplink_bps, gap)
            self.frames += 1
            self.compute_s += compute_s
            self.bytes += nbytes
            self.cpu_j += e.cpu_j
            self.send_j += e.send_j
            self.tail_j += e.tail_j
            return e

    def report(self) -> dict:
        """What the run's report carries (``energy``): the sums, the per-frame mean, the source."""
        with self._lock:
            total = self.cpu_j + self.send_j + self.tail_j
            machine = math.nan
            if self.source == "rapl":
                machine = read_energy_j(self.source, self._sys_class) - self._start_j
            elif self._power:
                machine = sum(self._power) / len(self._power) * max(self._last_sent - self._first_sent, 0.0)
            source = self.source if math.isfinite(machine) else "model"
            used = machine if source != "model" else total
            return {"source": source, "frames": self.frames, "device_compute_s": self.compute_s, "uplink_bytes": self.bytes,
                    "cpu_j": self.cpu_j, "send_j": self.send_j, "tail_j": self.tail_j, "model_j": total, "machine_j": machine,
                    "per_frame_j": used / self.frames if self.frames else math.nan}
