"""The shaped testbed (benchmarks/testbed.py): three namespaces with the real tiers over mutual TLS,
the RTT added by the relay and the rate set by tbf, and nothing left behind. Root only: elsewhere
these tests skip, saying why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import _testbed_net as net
import pytest
from _procs import HARNESS_ROOT, Cluster, Deadline
from _testbed_net import Link, why_not_available
from _testbed_tiers import Deployment, make_certs, read_report

WHY = why_not_available()
pytestmark = pytest.mark.skipif(bool(WHY), reason=f"testbed: {WHY}")

ACCESS = Link("test", "a slow, distant link", up_mbps=2.0, down_mbps=4.0, rtt_ms=60.0)
BACKHAUL = Link("backhaul", "fast", up_mbps=100.0, down_mbps=100.0, rtt_ms=4.0)


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


def test_a_few_frames_cross_the_shaped_link_over_mtls_and_everything_is_removed(tmp_path: Path) -> None:
    certs = tmp_path / "tls"
    make_certs(sys.executable, HARNESS_ROOT, certs, 1)
    tb = net.Testbed(ACCESS, BACKHAUL)
    try:
        assert all(ns in namespaces() for ns in tb.ns.values())
        assert "rate 2Mbit" in tb.qdisc("device") and "rate 4Mbit" in tb.qdisc("edge")
        with Cluster(HARNESS_ROOT, sys.executable, tmp_path / "logs") as cluster:
            dep = Deployment(tb, cluster, certs, "digits_cnn", tmp_path / "logs")
            try:
                dep.start(Deadline(120))
                report_path = tmp_path / "agent.json"
                agent = dep.agent("tb-agent", 1, ["--frames", "6", "--split", "0", "--max-in-flight", "1", "--report", str(report_path)])
                assert cluster.wait_exit([agent], Deadline(120)), agent.log_tail()
            finally:
                dep.close()
        report = read_report(report_path)
        assert (report["frames"], report["lost"], report["errors"]) == (6, 0, 0), report
        # one frame at a time: each waits at least the relay's round trip (60 ms) plus the backhaul's
        assert report["latency_p50_s"] >= 0.064
        tb.set_uplink(1.0)
        assert "rate 1Mbit" in tb.qdisc("device")
    finally:
        tb.close()
    assert tb.prefix not in namespaces()


def test_a_testbed_that_fails_half_built_removes_what_it_made(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []

    def broken_veth(self: net.Testbed, *args: object) -> None:
        made.extend(self.ns.values())
        raise RuntimeError("veth refused")

    monkeypatch.setattr(net.Testbed, "_veth", broken_veth)
    with pytest.raises(RuntimeError, match="veth refused"):
        net.Testbed(ACCESS, BACKHAUL)
    assert made and not any(ns in namespaces() for ns in made)
