"""The uplink estimator on a simulated link (a fake clock and byte counts, no sleeps): the bottleneck
is found from the answers' clock, a busy pipeline that keeps up is not taken for a slow link, and the
RTT is the least round trip seen."""

from __future__ import annotations

import math

import pytest

from device_agent.link import MIN_TRANSFER_S, LinkEstimator


def bottleneck(est: LinkEstimator, bps: float, rtt: float, nbytes: int, fps: float, frames: int, t0: float = 0.0,
               extra_wait: float = 0.0) -> float:
    """Frames of ``nbytes`` offered at ``fps`` through a FIFO link of ``bps``: each is answered an RTT
    after its transfer ends, and a transfer starts when the link is free. Returns the last answer."""
    tx = 8 * nbytes / bps
    free = t0
    answered = t0
    for i in range(frames):
        sent = t0 + i / fps
        start = max(sent, free)
        free = start + tx
        answered = free + rtt + extra_wait
        est.answered(sent, answered, nbytes, remote_compute_s=0.0)
    return answered


def test_a_saturated_link_is_measured_from_the_answers_clock() -> None:
    est = LinkEstimator(prior_bps=10e6, offered_fps=130)
    end = bottleneck(est, bps=1e6, rtt=0.02, nbytes=1058, fps=130, frames=300)  # 1.1 Mbit/s offered on 1 Mbit/s
    e = est.estimate(end)
    assert e.saturated
    assert e.uplink_bps == pytest.approx(1e6, rel=0.05)
    assert e.rtt_s == pytest.approx(0.02 + 8 * 1058 / 1e6, rel=0.01)  # the first frame found the link idle


def test_a_link_that_carries_the_load_keeps_the_nominal_figure_and_finds_the_rtt() -> None:
    est = LinkEstimator(prior_bps=10e6, offered_fps=30)
    end = bottleneck(est, bps=50e6, rtt=0.07, nbytes=1058, fps=30, frames=100)
    e = est.estimate(end)
    # the transfers (0.17 ms) are below what an answer's timing resolves: the larger of the nominal
    # figure and the frames' own lower bound
    assert not e.saturated and e.uplink_bps == pytest.approx(max(10e6, 8 * 1058 / MIN_TRANSFER_S))
    assert e.rtt_s == pytest.approx(0.07, abs=1e-3)
    assert e.samples == 100


def test_frames_that_wait_for_a_busy_cpu_but_keep_pace_are_not_a_slow_link() -> None:
    # a loaded machine hands the answers over in bursts every 30 ms, at 100 frames/s: most frames
    # wait well beyond the RTT and come back bunched (they look queued), but the pipeline answers
    # 100 a second: the link is not what limits it, and sending fewer bytes would not help
    est = LinkEstimator(prior_bps=10e6, offered_fps=100)
    rtt, end = 0.02, 0.0
    for i in range(400):
        sent = i / 100
        end = math.ceil((sent + rtt) / 0.03) * 0.03 + 1e-5 * (i % 3)
        est.answered(sent, end, 1058, 0.0)
    assert not est.estimate(end).saturated
    assert est.estimate(end).uplink_bps >= 10e6


def test_a_bottleneck_is_remembered_for_forget_s_then_the_nominal_figure_holds_again() -> None:
    est = LinkEstimator(prior_bps=10e6, offered_fps=130, forget_s=30.0)
    end = bottleneck(est, bps=1e6, rtt=0.02, nbytes=1058, fps=130, frames=300)
    end = bottleneck(est, bps=1e6, rtt=0.02, nbytes=70, fps=130, frames=1000, t0=end + 0.01)  # the device sends less: no queue
    assert est.estimate(end).saturated and est.estimate(end).uplink_bps < 1.2e6
    assert est.estimate(end + 31).uplink_bps == pytest.approx(10e6)


def test_the_remote_compute_is_not_counted_as_link_time_and_a_probe_lowers_the_rtt() -> None:
    est = LinkEstimator()
    est.answered(0.0, 0.150, 100, remote_compute_s=0.100)
    assert est.estimate(0.15).rtt_s == pytest.approx(0.050)
    est.probe(0.030, now=0.2)
    assert est.estimate(0.2).rtt_s == pytest.approx(0.030)
    assert est.estimate(20.0).rtt_s == pytest.approx(0.030)  # the window keeps its last minimum
    assert math.isnan(LinkEstimator().estimate(0.0).uplink_bps)


def test_a_cpu_that_falls_behind_in_bunches_is_not_a_slow_link() -> None:
    # the machine hands 8 answers over every 300 ms while 9 are offered: the answers fall behind the
    # rate and the frames queue, but bunched (0.1 ms apart), not one transfer apart as behind a link
    est = LinkEstimator(prior_bps=10e6, offered_fps=30)
    rtt, pending, end = 0.02, [], 0.0
    sent_times = iter(i / 30 for i in range(10**6))
    next_sent = next(sent_times)
    for k in range(1, 60):
        now = k * 0.3
        while next_sent + rtt <= now:
            pending.append(next_sent)
            next_sent = next(sent_times)
        for j, sent in enumerate(pending[:8]):
            end = now + j * 1e-4
            est.answered(sent, end, 1058, 0.0)
        pending = pending[8:]
    assert len(pending) > 10  # it fell behind
    assert not est.estimate(end).saturated



def probed(est: LinkEstimator, bps: float, rtt: float, nbytes: int, fps: float, frames: int) -> float:
    """``bottleneck`` with an idle probe's round trip before each frame (``--adapt`` probes the edge):
    large frames alone never show the RTT without their transfer in it."""
    end = 0.0
    for i in range(frames):
        est.probe(rtt, i / fps)
        end = bottleneck(est, bps, rtt, nbytes, fps, 1, t0=i / fps)
    return end


def test_large_frames_on_a_link_they_do_not_fill_measure_it_below_the_nominal_figure() -> None:
    # mobilenet_v2 at split 8 (50 kB) at 2 frames/s on a 1.1 Mbit/s link: 0.8 Mbit/s offered, no
    # queue, but each frame spends 0.36 s on the wire; the radio profile says 6 Mbit/s
    est = LinkEstimator(prior_bps=6e6, offered_fps=2)
    end = probed(est, bps=1.1e6, rtt=0.15, nbytes=50_215, fps=2, frames=20)
    e = est.estimate(end)
    assert not e.saturated and e.uplink_bps == pytest.approx(1.1e6, rel=0.02) and e.rtt_s == pytest.approx(0.15)
    # a large frame faster than the nominal figure measures it too
    fast = LinkEstimator(prior_bps=6e6, offered_fps=2)
    fast_end = probed(fast, bps=40e6, rtt=0.02, nbytes=50_215, fps=2, frames=20)
    assert fast.estimate(fast_end).uplink_bps == pytest.approx(40e6, rel=0.02)
    # remembered for forget_s, then the nominal figure holds again
    assert est.estimate(end + est.forget_s + 1).uplink_bps == 6e6


def test_a_frame_just_under_the_measurable_size_is_only_a_lower_bound() -> None:
    from device_agent.link import MEASURABLE_S

    nbytes = int(MEASURABLE_S * 6e6 / 8) - 1  # the nominal rate would send it in just under MEASURABLE_S
    est = LinkEstimator(prior_bps=6e6, offered_fps=2)
    end = probed(est, bps=1.1e6, rtt=0.15, nbytes=nbytes, fps=2, frames=20)
    assert est.estimate(end).uplink_bps == 6e6  # the larger of the nominal figure and its lower bound
    big = LinkEstimator(prior_bps=6e6, offered_fps=2)
    big_end = probed(big, bps=1.1e6, rtt=0.15, nbytes=nbytes + 1, fps=2, frames=20)
    assert big.estimate(big_end).uplink_bps == pytest.approx(1.1e6, rel=0.02)


def test_a_large_frame_whose_rtt_held_its_transfer_is_no_measure() -> None:
    # no probe: the least round trip seen is a large frame's own (RTT + transfer), so the next ones seem
    # to spend no time on the wire; under a few ms of jitter on the answer path they must not make a
    # 1.1 Mbit/s link look like tens of Mbit/s (the nominal figure holds)
    import random

    rng = random.Random(0)
    est = LinkEstimator(prior_bps=6e6, offered_fps=2)
    end = 0.0
    for i in range(40):
        end = bottleneck(est, bps=1.1e6, rtt=0.15, nbytes=50_215, fps=2, frames=1, t0=i / 2, extra_wait=rng.uniform(0, 0.01))
    assert est.estimate(end).uplink_bps == 6e6
    # with probes, the same jitter leaves the measure within a few per cent of the link
    probed_est = LinkEstimator(prior_bps=6e6, offered_fps=2)
    for i in range(40):
        probed_est.probe(0.15, i / 2)
        end = bottleneck(probed_est, bps=1.1e6, rtt=0.15, nbytes=50_215, fps=2, frames=1, t0=i / 2,
                         extra_wait=rng.uniform(0, 0.01))
    assert probed_est.estimate(end).uplink_bps == pytest.approx(1.1e6, rel=0.05)
