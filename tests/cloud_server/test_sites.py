"""CrowdPower's site selection (paper 001 §3.6) over the running system: edge nodes are the sites,
the live devices placed on them the participants, their registered sensor benchmarks the phone
quality, and CrowdPower's own reputations decide who counts as malicious."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cloud_server import sites
from cloud_server.core import CloudCore
from cloud_server.registry import Registry
from cloud_server.config import CloudConfig
from cloud_server.service import start_cloud
from cloud_server.scheduler_service import SchedulerClient
from ecd import zoo
from ecd.errors import EcdError, PreconditionError, RequestError
from ecd.split import Preferences
from ecd.transport.rpc import LoopThread
from ecd.types import DeviceRegistration, EdgeRegistration, Encoding, Position
from ecd.scheduler_types import SiteRequest
from scheduling.quality import crowdpower

EVENT = Position(40.7000, -74.0000)
NEAR, FAR, BAD = Position(40.7010, -74.0000), Position(40.7300, -74.0000), Position(40.7005, -74.0010)  # ~111 m, ~3.3 km, ~100 m


def town(tmp_path: Path) -> tuple[CloudCore, dict[str, str], dict[str, list[str]]]:
    core = CloudCore(Registry(str(tmp_path / "cloud.sqlite3")), [zoo.load_manifest("digits_cnn")])
    edges = {name: core.edges.register(EdgeRegistration(f"127.0.0.1:{k + 1}", 10.0, pos))
             for k, (name, pos) in enumerate((("near", NEAR), ("far", FAR), ("bad", BAD)))}
    phones = {"near": [{"temperature": 8.0, "camera": 9.0, "pulse": 7.0, "ambient_temperature": 6.0}] * 2,
              "far": [{"temperature": 9.5, "camera": 9.5, "pulse": 9.5, "ambient_temperature": 9.5}] * 2,
              "bad": [{"temperature": 10.0, "camera": 10.0, "pulse": 10.0, "ambient_temperature": 10.0}] * 2}
    members: dict[str, list[str]] = {}
    for name, sensors in phones.items():
        for s in sensors:
            a = core.devices.register(DeviceRegistration(name, "pi4", "wifi", Preferences(0.5, 0.5, 0), "digits_cnn", 2,
                                                        Encoding.FLOAT32, None, s))
            core.registry.set_device_edges({a.device_id: edges[name]})
            members.setdefault(name, []).append(a.device_id)
    core.registry.update_device(members["bad"][1], reputation=1.2)  # CrowdPower caught it in a campaign
    return core, edges, members


def test_the_site_chosen_is_crowdpowers_choice_over_the_edge_nodes_and_their_devices(tmp_path: Path) -> None:
    core, edges, members = town(tmp_path)
    got = core.crowdsensing.select_site(SiteRequest("fire", 7.0, 5.0, EVENT))
    by_site = {s.site: s for s in got.sites}
    assert got.chosen == edges["near"]
    assert by_site[edges["bad"]].reason == "malicious participant" and not by_site[edges["bad"]].eligible
    assert by_site[edges["far"]].eligible and by_site[edges["far"]].score < by_site[edges["near"]].score
    assert set(by_site[edges["near"]].group) <= set(members["near"]) and by_site[edges["near"]].group
    assert by_site[edges["near"]].proximity_m == pytest.approx(111.2, abs=0.5)
    assert by_site[edges["far"]].proximity_m == pytest.approx(3335.8, abs=2)
    # the same scores as the library's on the sites built by hand, in metres from the event
    hand = [crowdpower.Site(edges["near"], (0.0, 111.19), [crowdpower.Participant(json.loads(d.sensors), d.reputation)
                                                           for d in core.registry.devices() if d.edge_id == edges["near"]])]
    best, _ = crowdpower.select_site(hand, "fire", 7.0, 5.0, (0.0, 0.0))
    assert best.score == pytest.approx(by_site[edges["near"]].score, rel=1e-3)
    # quality above what the near phones have: the far site, farther but better, is chosen
    assert core.crowdsensing.select_site(SiteRequest("fire", 9.0, 5.0, EVENT)).chosen == edges["far"]
    # a budget of one device cannot buy the group the level needs anywhere
    assert core.crowdsensing.select_site(SiteRequest("fire", 9.9, 1.0, EVENT)).chosen == ""


@pytest.mark.parametrize("request_,field", [
    (SiteRequest("meteor", 5.0, 5.0, EVENT), "event"),
    (SiteRequest("m" * 10**6, 5.0, 5.0, EVENT), "event: expected one of [a-z_, ]+, got 'm{64}…'$"),
    (SiteRequest("fire", 11.0, 5.0, EVENT), "level"),
    (SiteRequest("fire", 5.0, float("nan"), EVENT), "budget"),
    (SiteRequest("fire", 5.0, 5.0, None), "position"),
    (SiteRequest("fire", 5.0, 5.0, Position(91.0, 0.0)), "position.lat"),
])
def test_bad_site_requests_name_the_field(tmp_path: Path, request_: SiteRequest, field: str) -> None:
    core, _, _ = town(tmp_path)
    with pytest.raises(EcdError, match="^" + field.replace(".", r"\.")) as e:
        core.crowdsensing.select_site(request_)
    assert e.value.status == "INVALID_ARGUMENT"


def test_bad_sensor_scores_are_refused_at_registration(tmp_path: Path) -> None:
    with pytest.raises(RequestError, match=r"sensors\[camera\]: expected a score in 0..10"):
        sites.check_sensors({"camera": 11.0})
    with pytest.raises(RequestError, match="sensors: 'nose' is not one of"):
        sites.check_sensors({"nose": 5.0})
    with pytest.raises(RequestError, match="at most 32"):
        sites.check_sensors({f"s{k}": 1.0 for k in range(33)})
    core = CloudCore(Registry(str(tmp_path / "c.sqlite3")), [zoo.load_manifest("digits_cnn")])
    with pytest.raises(PreconditionError, match="sites: no alive edge node has a position"):
        core.crowdsensing.select_site(SiteRequest("fire", 5.0, 5.0, EVENT))


def test_site_selection_over_the_scheduler_service(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    loop = LoopThread()
    cloud = loop.run(start_cloud(replace(CloudConfig(), db=str(tmp_path / "cloud.sqlite3"), metrics_port=-1)))
    client = SchedulerClient(f"127.0.0.1:{cloud.port}")
    try:
        with pytest.raises(EcdError, match="FAILED_PRECONDITION: sites"):
            client.select_site(SiteRequest("fire", 5.0, 5.0, EVENT))
        cloud.core.edges.register(EdgeRegistration("127.0.0.1:1", 10.0, NEAR))
        got = client.select_site(SiteRequest("storm", 5.0, 5.0, EVENT))
        assert got.chosen == "" and [s.reason for s in got.sites] == ["no participants"]
        with pytest.raises(EcdError, match="INVALID_ARGUMENT: event"):
            client.select_site(SiteRequest("meteor", 5.0, 5.0, EVENT))
        from ecd_cli.main import main

        assert main(["schedule", "site", "--cloud", f"127.0.0.1:{cloud.port}", "--event", "storm",
                     "--position", "40.7,-74.0", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["sites"][0]["reason"] == "no participants"
        assert main(["schedule", "site", "--cloud", f"127.0.0.1:{cloud.port}", "--event", "storm", "--position", "x"]) == 65  # bad data (sysexits)
        assert "--position" in capsys.readouterr().err
    finally:
        client.close()
        loop.run(cloud.stop(0))
        loop.close()
