"""The live re-split's decision on a measured link (no network, a fake clock): a link that cannot carry
the frame rate moves the split to one that sends less, never below the floor; a link hovering at the
threshold does not make it flap (hysteresis and the dwell time)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from device_agent.adapt import Adaptation, decide_resplit, split_costs
from device_agent.link import LinkEstimate
from ecd.manifest import Manifest
from ecd.metrics import ServiceMetrics
from ecd.profiles import load_device, load_radio
from ecd.split import Preferences, decide_split

FPS = 130.0


def costs(m: Manifest, prefs: Preferences, bps: float, current: int = 0):
    decision = decide_split(m, load_device("pi4"), load_radio("wifi"), prefs)
    link = LinkEstimate(bps, 0.02, 100, True)
    # no compute measured yet: the profile's own figures (the same at every current split)
    return split_costs(m, decision, load_device("pi4"), load_radio("wifi"), link, current, math.nan, math.nan, FPS)


def test_a_link_too_slow_for_the_raw_image_moves_the_energy_only_user_to_fewer_bytes(bundled: Manifest) -> None:
    prefs = Preferences(1.0, 0.0)
    fast = costs(bundled, prefs, 50e6)
    assert decide_resplit(fast, 0, 0.1, 0.1) is None  # at 50 Mbit/s the raw image is the user's split
    slow = costs(bundled, prefs, 1e6)  # 130 raw images a second need 1.1 Mbit/s
    assert not np.isfinite(slow.latency_s[0])
    target = decide_resplit(slow, 0, 0.1, 0.1)
    assert target is not None and slow.bytes[target] < slow.bytes[0]
    assert slow.latency_s[target] <= 1.1 * np.min(slow.latency_s)


def test_the_floor_is_never_crossed(bundled: Manifest) -> None:
    c = costs(bundled, Preferences(1.0, 0.0, min_split=5), 0.01e6)  # nothing keeps up: the least bytes at or above 5
    assert decide_resplit(c, 5, 0.1, 0.1) == 6
    c = costs(bundled, Preferences(1.0, 0.0, min_split=5), 50e6)
    assert decide_resplit(c, 6, 0.1, 0.1) in (None, 5)
    assert not np.isfinite(c.utility[:5]).any()


def threshold_pair(m: Manifest, prefs: Preferences, margin: float) -> tuple[float, float]:
    """Two bandwidths around the point where the split leaves 0: at ``hi`` split 0 is kept, at ``lo`` it
    is left; between them lies the band the margin keeps it in."""
    grid = np.geomspace(0.5e6, 5e6, 400)
    leave = [decide_resplit(costs(m, prefs, b), 0, 0.1, 0.0) is not None for b in grid]
    edge = max(i for i, x in enumerate(leave) if x)  # the fastest link that still makes split 0 leave
    return float(grid[edge + 1]), float(grid[edge])


class FakeCore(SimpleNamespace):
    pass


def adaptation(m: Manifest, prefs: Preferences, margin: float, dwell_s: float, clock) -> tuple[Adaptation, list]:
    decision = decide_split(m, load_device("pi4"), load_radio("wifi"), prefs)
    core = FakeCore(manifest=m, decision=decision, profile=load_device("pi4"), radio=load_radio("wifi"), prefs=prefs,
                    assignment=SimpleNamespace(split=SimpleNamespace(device=0)))
    asked: list[int] = []

    def request(split: int, reason: str) -> bool:
        assert reason == "bandwidth"
        asked.append(split)
        core.assignment.split.device = split  # applied at once (the stream's part is tested elsewhere)
        a._split = split
        return True

    a = Adaptation(core, request, ServiceMetrics("device"), enabled=True, fps=FPS, margin=margin, dwell_s=dwell_s, clock=clock)
    a._split = 0
    a._device_times.extend([math.nan] * 5)  # no compute measured: the profile's own figures
    a._remote_times.extend([math.nan] * 5)
    return a, asked


@pytest.mark.parametrize("margin,dwell_s,most", [(0.1, 0.0, 1), (0.0, 2.0, 6)])
def test_a_link_oscillating_around_the_threshold_does_not_flap(bundled: Manifest, margin: float, dwell_s: float, most: int) -> None:
    """Margin alone (no dwell): the flips stay inside the band it keeps the split in (at most one
    switch); dwell alone bounds the switches by the time (12 s / 2 s)."""
    prefs = Preferences(1.0, 0.0)
    hi, lo = threshold_pair(bundled, prefs, margin)
    t = [0.0]
    a, asked = adaptation(bundled, prefs, margin, dwell_s, lambda: t[0])
    for step in range(120):  # 12 s of a link flipping between the two every 0.1 s
        t[0] = 10.0 + step * 0.1
        a.consider(t[0], LinkEstimate(hi if step % 2 else lo, 0.02, 100, True))
    assert len(asked) <= most, asked


def test_without_hysteresis_or_dwell_the_same_link_flaps(bundled: Manifest) -> None:
    """The test above would see flapping: with neither, the split follows every flip."""
    prefs = Preferences(1.0, 0.0)
    hi, lo = threshold_pair(bundled, prefs, 0.0)
    t = [0.0]
    a, asked = adaptation(bundled, prefs, 0.0, 0.0, lambda: t[0])
    for step in range(20):
        t[0] = 10.0 + step * 0.1
        a.consider(t[0], LinkEstimate(hi if step % 2 else lo, 0.02, 100, True))
    assert len(asked) >= 10
