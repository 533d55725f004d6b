"""One scheduler leader among cloud replicas sharing a registry: only the holder of the scheduler
lease places devices, every replica follows the placements it writes, a replica takes over when
the leader stops renewing (and places at once), and a leader deposed while it solved writes nothing
and moves nobody."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from cloud_server import live_placement, placement
from cloud_server.core import CloudCore
from cloud_server.leader import NotLeaderError
from cloud_server.registry_leader import LeaseLostError
from cloud_server.service import ControlMonitor
from ecd.metrics import SchedulerMetrics
from ecd.scheduler_types import CampaignSpec, Grid, SiteRequest
from ecd.types import Position
from ecd.split import Preferences
from ecd.types import DeviceRegistration, EdgeHeartbeat, Encoding

from cloud_core_harness import A_POS, B_POS, M, NEAR_A, NEAR_B, Cloud


def replica(cloud: Cloud) -> tuple[CloudCore, CollectorRegistry]:
    """A second cloud replica on the same registry and clock, with its own metrics."""
    prom = CollectorRegistry()
    return CloudCore(cloud.core.registry, [M], clock=cloud.clock, metrics=SchedulerMetrics(prom)), prom


def leader_gauge(prom: CollectorRegistry) -> float | None:
    return prom.get_sample_value("ecd_scheduler_leader")


def test_one_replica_leads_the_other_follows_and_takes_over_when_the_leader_stops(cloud: Cloud) -> None:
    a, b = cloud.edge(1, A_POS), cloud.edge(2, B_POS)
    cloud.register(position=NEAR_A)
    other, prom = replica(cloud)
    assert cloud.core.leader.renew() and not other.leader.renew()
    assert (leader_gauge(cloud.prom), leader_gauge(prom)) == (1.0, 0.0)
    first = cloud.core.placement.place()
    with pytest.raises(NotLeaderError, match=rf"^scheduler: this replica \({other.leader.holder}\) does not lead the "
                                             rf"schedulers; the leader is {cloud.core.leader.holder}: ask it$"):
        other.placement.place()
    assert other.placement.follow() and other.placement.current == first
    joined = other.devices.register(DeviceRegistration("n", "pi4", "wifi", Preferences(0.5, 0.5, 0), M.model_id, 2,
                                                       Encoding.FLOAT32, NEAR_B))
    assert joined.placement_version == first.version  # the follower hands out the leader's placement

    cloud.clock.now += cloud.core.leader.ttl_s + 0.001  # the leader stopped renewing (killed)
    for edge in (a, b):
        cloud.core.edges.heartbeat(EdgeHeartbeat(edge, 0.0, 0))
    assert other.leader.renew() and other.leader.term == 2 and leader_gauge(prom) == 1.0
    second = other.placement.place()
    assert second.version == first.version + 1 == cloud.core.registry.latest_placement()["version"]
    with pytest.raises(NotLeaderError, match=rf"the leader is {other.leader.holder}: ask it$"):
        cloud.core.placement.place()
    assert not cloud.core.leader.leading and leader_gauge(cloud.prom) == 0.0


def test_a_leader_deposed_while_it_solves_writes_nothing_and_moves_nobody(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    cloud.edge(1, A_POS), cloud.edge(2, B_POS)
    d = cloud.register(position=NEAR_B)
    before = cloud.core.registry.device(d.device_id).edge_id
    other, _ = replica(cloud)
    solve = placement.place

    def slow(sites, users, method, seed):  # the solver runs past the lease; the other replica takes it meanwhile
        cloud.clock.now += cloud.core.leader.ttl_s + 0.001
        assert other.leader.renew()
        return solve(sites, users, method, seed)

    monkeypatch.setattr(live_placement.placement, "place", slow)
    with pytest.raises(LeaseLostError, match=r"no longer leads \(its term 1 ended\): its placement is not written$"):
        cloud.core.placement.place()
    assert cloud.core.registry.latest_placement() is None and cloud.core.placement.current is None
    assert cloud.core.registry.device(d.device_id).edge_id == before
    assert cloud.runs("placement", placement.DEFAULT_METHOD, "error") == 1.0


def test_a_stopping_leader_hands_over_at_once(cloud: Cloud) -> None:
    other, prom = replica(cloud)
    assert cloud.core.leader.renew() and not other.leader.renew()
    cloud.core.leader.release()
    assert leader_gauge(cloud.prom) == 0.0 and other.leader.renew() and leader_gauge(prom) == 1.0


def test_a_new_leader_places_at_once_so_a_leader_killed_between_its_write_and_its_moves_strands_nobody(
        cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    a = cloud.edge(1, A_POS)
    d = cloud.register(position=NEAR_B)  # only edge a exists: d starts there
    b = cloud.edge(2, B_POS)
    other, _ = replica(cloud)
    assert cloud.core.leader.renew()

    def killed(*_args) -> None:  # the leader dies after its placement is written, before any device moves
        raise SystemExit("killed")

    monkeypatch.setattr(cloud.core.assignment, "move", killed)
    with pytest.raises(SystemExit):
        cloud.core.placement.place(trigger="edge joined")
    written = cloud.core.registry.latest_placement()
    assert {x["device_id"]: x["edge_id"] for x in written["devices"]} == {d.device_id: b}
    assert cloud.core.registry.device(d.device_id).edge_id == a  # stranded on the edge the placement left

    cloud.clock.now += cloud.core.leader.ttl_s + 0.001
    for edge in (a, b):
        cloud.core.edges.heartbeat(EdgeHeartbeat(edge, 0.0, 0))
    assert other.placement.follow()
    ControlMonitor(other, every_s=1.0).check()
    assert other.leader.leading and other.placement.current.trigger == "leader changed"
    assert other.placement.version == written["version"] + 1
    assert cloud.core.registry.device(d.device_id).edge_id == b


def test_campaigns_and_site_selection_run_only_on_the_leader(cloud: Cloud) -> None:
    other, _ = replica(cloud)
    assert cloud.core.leader.renew() and not other.leader.renew()
    spec = CampaignSpec(name="c", grid=Grid(Position(40.69, -74.01), Position(40.81, -73.99), rows=1, cols=1), slots=1,
                        reporters=[1])
    for call in (lambda: other.crowdsensing.create_campaign(spec),
                 lambda: other.crowdsensing.select_site(SiteRequest("fire", 5.0, 10.0, NEAR_A))):
        with pytest.raises(NotLeaderError, match=rf"the leader is {cloud.core.leader.holder}: ask it$"):
            call()
    assert cloud.core.registry.campaign_count() == 0
