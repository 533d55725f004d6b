"""A real agent on loopback (real cloud and edge servers), its link reading injected: when the link
slows under load it re-splits to a split that sends fewer bytes, with no frame lost or answered
twice, and tells the cloud; its energy per frame is the model applied to what it measured."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from harness import StreamingAgent, Tiers

from device_agent import adapt
from device_agent.energy import EnergyMeter, energy_source
from device_agent.link import LinkEstimate
from ecd.profiles import load_device, load_radio


class InjectedLink:
    """The link the agent reads, set by the test (the estimator's own tests are test_link.py's)."""

    def __init__(self, bps: float) -> None:
        self.bps, self.samples = bps, 0

    def answered(self, sent_at: float, answered_at: float, nbytes: int, remote_compute_s: float) -> None:
        self.samples += 1

    def probe(self, rtt_s: float, now: float) -> None:
        pass

    def estimate(self, now: float) -> LinkEstimate:
        return LinkEstimate(self.bps, 0.002, self.samples, True)


@pytest.fixture
def link(monkeypatch: pytest.MonkeyPatch) -> InjectedLink:
    injected = InjectedLink(50e6)
    monkeypatch.setattr(adapt, "LinkEstimator", lambda **kw: injected)
    return injected


def test_a_slower_link_under_load_resplits_to_fewer_bytes_without_losing_a_frame(tiers: Tiers, tmp_path: Path,
                                                                                  link: InjectedLink) -> None:
    # a wide slack: on a fast link the energy-only user's raw image stays, whatever this machine's
    # compute times make the other splits' latency; at 0.5 Mbit/s the raw image cannot keep up at all
    s = StreamingAgent(tiers, tmp_path, fps=130.0, w_privacy=0.0, adapt=True, adapt_dwell_s=0.0, adapt_slack=5.0,
                       probe_every_s=0.0)
    try:
        assert s.agent.assignment.split.device == 0  # energy-only: the raw image on a fast link
        s.wait_for(lambda a: a.tally.frames >= 30)
        link.bps = 0.5e6  # 130 raw images a second need 1.1 Mbit/s
        s.wait_for(lambda a: a.assignment.split.device != 0 and a.tally.snapshot()["per_split"].get(a.assignment.split.device, 0) >= 30)
        new = s.agent.assignment.split.device
        assert tiers.cloud.registry.device(s.agent.assignment.device_id).split_device == new
        assert s.agent.metrics.chosen_split.labels("device")._value.get() == new
        assert s.agent.metrics.link_uplink_bps.labels("device")._value.get() == 0.5e6
    finally:
        outcomes = s.stop()
    report = s.agent.report(outcomes)
    assert [o.frame_id for o in outcomes] == list(range(1, s.agent.status().sent + 1)), "a frame was lost or answered twice"
    assert all(o.result.ok for o in outcomes) and report.duplicates_dropped == 0
    splits = [o.result.split.device for o in outcomes]
    first = splits.index(new)
    assert set(splits[:first]) == {0} and set(splits[first:]) == {new}  # one switch, between two frames
    assert report.split_changes == [{"frame": outcomes[first].frame_id, "from": 0, "to": new, "reason": "bandwidth"}]
    before = {o.result.uplink_bytes for o in outcomes[:first]}
    after = {o.result.uplink_bytes for o in outcomes[first:]}
    assert max(after) < min(before)  # it sends fewer bytes


def test_the_energy_per_frame_is_the_model_applied_to_the_measured_compute_and_bytes(tiers: Tiers, tmp_path: Path,
                                                                                    link: InjectedLink) -> None:
    link.bps = 2e6
    s = StreamingAgent(tiers, tmp_path, fps=100.0, w_privacy=1.0)  # a deep split: the device computes
    try:
        s.wait_for(lambda a: a.tally.frames >= 40)
    finally:
        outcomes = s.stop()
    report = s.agent.report(outcomes)
    device, radio = load_device("pi4"), load_radio("wifi")
    compute_s = sum(o.result.device_compute_s for o in outcomes)  # measured per frame, carried back in its result
    sent_bytes = sum(o.result.uplink_bytes for o in outcomes)  # as the edge counted them
    assert compute_s > 0 and sent_bytes > 0
    e = report.energy
    assert e["frames"] == len(outcomes) and e["uplink_bytes"] == sent_bytes
    assert e["device_compute_s"] == pytest.approx(compute_s)
    assert e["cpu_j"] == pytest.approx(device.cpu_active_w * compute_s)
    assert e["send_j"] == pytest.approx(8 * sent_bytes * (radio.joules_per_bit + radio.active_base_w / link.bps))
    assert 0 < e["tail_j"] <= radio.tail_w * (radio.tail_s + len(outcomes) / 100.0 * 2)  # the radio never idles at 100 fps
    assert report.energy_per_frame_j == pytest.approx((e["cpu_j"] + e["send_j"] + e["tail_j"]) / len(outcomes))
    assert report.energy_source == energy_source() and report.energy_source in ("rapl", "power_supply", "model")
    assert math.isfinite(report.uplink_mbps_measured)


def test_the_energy_source_is_what_the_machine_offers(tmp_path: Path) -> None:
    assert energy_source(tmp_path) == "model"
    (tmp_path / "power_supply" / "BAT0").mkdir(parents=True)
    (tmp_path / "power_supply" / "BAT0" / "power_now").write_text("5000000\n")
    assert energy_source(tmp_path) == "power_supply"
    (tmp_path / "powercap" / "intel-rapl:0").mkdir(parents=True)
    (tmp_path / "powercap" / "intel-rapl:0" / "energy_uj").write_text("123\n")
    assert energy_source(tmp_path) == "rapl"


def test_where_rapl_counts_the_machine_s_energy_it_is_the_per_frame_figure(tmp_path: Path) -> None:
    counter = tmp_path / "powercap" / "intel-rapl:0" / "energy_uj"
    counter.parent.mkdir(parents=True)
    counter.write_text("1000000\n")
    meter = EnergyMeter(load_device("pi4"), load_radio("wifi"), tmp_path)
    for i in range(4):
        meter.add(i * 0.1, 0.002, 1000, 10e6)
    counter.write_text("3000000\n")  # 2 J over the run
    e = meter.report()
    assert e["source"] == "rapl" and e["machine_j"] == pytest.approx(2.0) and e["per_frame_j"] == pytest.approx(0.5)
    assert e["model_j"] == pytest.approx(e["cpu_j"] + e["send_j"] + e["tail_j"]) and e["model_j"] != pytest.approx(2.0)
