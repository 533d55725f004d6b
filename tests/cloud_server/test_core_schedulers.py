"""The cloud core's schedulers without gRPC, on a clock the test moves: placement, campaigns and
their scoring, reputations, site selection, and task heads, with the scheduler metrics read back from
their Prometheus registry."""

from __future__ import annotations

import dataclasses

import pytest

from cloud_server import campaigns, placement
from cloud_server import live_placement
from cloud_server.core import MAX_READING
from cloud_server.crowdsensing import campaign_report_from_dict
from cloud_server.live_placement import placement_report_from_dict
from cloud_server.heads import BUILTIN_HEAD
from ecd.errors import (
    LimitError,
    NotFoundError,
    PreconditionError,
    RequestError,
)
from ecd.limits import (
    MAX_HEAD_LABELS,
    MAX_HEADS_PER_MODEL,
)
from ecd.scheduler_types import (
    DeviceQuality,
    SiteRequest,
)
from ecd.types import (
    Assignment,
    EdgeHeartbeat,
    HeadSpec,
    LocationReport,
    Position,
    Split,
    Task,
)

from cloud_server import registry_schema
from cloud_core_harness import A_POS, B_POS, EAST, NEAR_A, NEAR_B, WEST, M, Cloud, campaign_spec, frame


# --- placement ---------------------------------------------------------------------------------


def test_placement_applies_the_solvers_choice_and_reports_it(cloud: Cloud) -> None:
    a, b = cloud.edge(1, A_POS, cost=0.5), cloud.edge(2, B_POS)
    dead = cloud.edge(3, Position(40.75, -74.0))
    blind = cloud.edge(4)  # no position: not a site, but alive
    cloud.clock.now += 2.5
    for e in (a, b, blind):
        cloud.core.edges.heartbeat(EdgeHeartbeat(e, 0.0, 0))
    cloud.clock.now += 1.0  # dead's heartbeat is 3.5 s old
    devices = [cloud.register(f"d{k}", position=p) for k, p in enumerate([NEAR_A, NEAR_A, NEAR_B, NEAR_B])]
    lost = cloud.register("lost")  # no position
    assert cloud.core.placement.due() == "edge joined"
    n = len(cloud.changes)
    report = cloud.core.placement.place(seed=1, trigger="test")
    sites = [placement.Site(a, A_POS, 0.5), placement.Site(b, B_POS, 5.0)]
    sites.sort(key=lambda s: s.edge_id)
    users = sorted((placement.User(d.device_id, Position(p.lat, p.lon), M.model_id)  # the registry's order: same time, by id
                    for d, p in zip(devices, [NEAR_A, NEAR_A, NEAR_B, NEAR_B])), key=lambda u: u.device_id)
    want = placement.place(sites, users, placement.DEFAULT_METHOD, 1)
    assert (report.version, report.method, report.trigger) == (1, placement.DEFAULT_METHOD, "test")
    assert (report.total_cost, report.activation_cost, report.service_cost) == (want.total_cost, want.activation_cost, want.service_cost)
    assert report.seconds > 0 and report.computed_unix_ms == int(cloud.clock.now * 1000)
    assert report.instance_json == want.to_json()
    active = set(want.active)
    mapping = {**want.device_edge}
    counts = {e: list(mapping.values()).count(e) for e in (a, b, blind)}
    mapping[lost.device_id] = min((e for e in (a, b, blind) if e in active),
                                  key=lambda e: (counts[e] / 10.0, e))
    counts[mapping[lost.device_id]] += 1
    assert {d.device_id: d.edge_id for d in report.devices} == mapping
    assert {d.device_id: d.edge_id for d in cloud.core.registry.devices()} == mapping
    by_edge = {e.edge_id: e for e in report.edges}
    assert set(by_edge) == {a, b, dead, blind}
    assert by_edge[a] == dataclasses.replace(by_edge[a], endpoint="127.0.0.1:1", position=A_POS, active=a in active, alive=True,
                                             devices=counts[a], activation_cost=0.5)
    assert (by_edge[b].active, by_edge[b].alive, by_edge[b].devices, by_edge[b].activation_cost) == (b in active, True, counts[b], 5.0)
    assert (by_edge[dead].active, by_edge[dead].alive, by_edge[dead].devices, by_edge[dead].position) == (False, False, 0,
                                                                                                        Position(40.75, -74.0))
    assert (by_edge[blind].active, by_edge[blind].alive, by_edge[blind].position) == (False, True, None)
    costs = {d.device_id: d.service_cost for d in report.devices}
    assert costs == {**want.device_cost, lost.device_id: 0.0}
    names = {d.device_id: (d.device_name, d.position) for d in report.devices}
    assert names[lost.device_id] == ("lost", None) and names[devices[2].device_id] == ("d2", NEAR_B)
    assert cloud.core.placement.current is report and cloud.core.placement._placed_alive == {a, b, blind}
    assert placement_report_from_dict(cloud.core.registry.latest_placement()) == report
    assert len(cloud.changes) == n + 1 and cloud.core.placement.due() is None
    assert cloud.runs("placement", placement.DEFAULT_METHOD, "ok") == 1.0 and cloud.seconds("placement") == 0.0
    assert cloud.prom.get_sample_value("ecd_placement_cost", {"part": "total"}) == report.total_cost
    assert cloud.prom.get_sample_value("ecd_placement_active_edges") == len(active)
    assert cloud.core.devices.get_assignment(lost.device_id, lost.token).placement_version == 1
    again = cloud.core.placement.place("otacs")
    assert (again.version, again.method, again.trigger) == (2, "otacs", "operator")
    assert cloud.runs("placement", "otacs", "ok") == 1.0


def test_placement_hands_the_solver_its_method_and_seed(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, int]] = []
    solve = placement.place

    def recording(sites, users, method, seed):  # the real solver, its arguments recorded
        asked.append((method, seed))
        return solve(sites, users, method, seed)

    monkeypatch.setattr(live_placement.placement, "place", recording)
    cloud.edge(1, A_POS)
    cloud.register(position=NEAR_A)
    cloud.core.placement.place()
    cloud.core.placement.place("otacs", seed=7)
    assert asked == [(placement.DEFAULT_METHOD, 0), ("otacs", 7)]


def test_placement_without_positions_spreads_devices_by_load(cloud: Cloud) -> None:
    a, b = cloud.edge(1), cloud.edge(2, capacity=20.0)
    ds = [cloud.register(f"d{k}") for k in range(3)]
    report = cloud.core.placement.place()
    assert (report.method, report.total_cost, report.activation_cost, report.service_cost, report.seconds, report.instance_json) == (
        "least loaded (no positions)", 0.0, 0.0, 0.0, 0.0, "")
    got = {d.device_id: d.edge_id for d in report.devices}
    assert sorted(got.values()) == sorted([a, b, b]) and set(got) == {d.device_id for d in ds}
    by_edge = {e.edge_id: e for e in report.edges}
    assert (by_edge[a].active, by_edge[a].devices, by_edge[b].active, by_edge[b].devices) == (True, 1, True, 2)
    assert all(d.service_cost == 0.0 and d.position is None for d in report.devices)


def test_placement_with_no_live_edge_is_refused_and_counted(cloud: Cloud) -> None:
    with pytest.raises(PreconditionError, match=r"^placement: none computed yet \(no edge node has registered\)$"):
        cloud.core.placement.report()
    assert cloud.core.placement.due() is None
    cloud.edge(1)
    cloud.clock.now += 5
    assert cloud.core.placement.due() is None
    with pytest.raises(PreconditionError, match=r"^edges: no edge node is alive \(registered, with a heartbeat in the last 3 s\) "
                                                r"to place devices on$"):
        cloud.core.placement.place("otacs")
    assert cloud.runs("placement", "otacs", "error") == 1.0 and cloud.seconds("placement") == 0.0
    assert cloud.runs("placement", "otacs", "ok") is None and cloud.changes == []
    with pytest.raises(RequestError, match=r"^method"):
        cloud.core.placement.place("random_walk")


def test_placement_is_due_when_devices_join_or_leave_at_most_once_per_debounce_period(cloud: Cloud) -> None:
    """Devices that join after the edges (or whose lease runs out) re-run placement, debounced; a
    device without a position changes nothing placement could place."""
    a, b = cloud.edge(1, A_POS), cloud.edge(2, B_POS)
    debounce = cloud.core.placement.debounce_s
    assert cloud.core.placement.due() == "edge joined"
    cloud.core.placement.place()
    cloud.register("blind")  # no position
    cloud.clock.now += debounce
    for edge in (a, b):
        cloud.core.edges.heartbeat(EdgeHeartbeat(edge, 0.0, 0))
    assert cloud.core.placement.due() is None
    d = cloud.register(position=NEAR_B)
    assert cloud.core.placement.due() == "devices joined"
    t0 = cloud.clock.now
    cloud.core.placement.place()
    cloud.register("late", position=NEAR_A)
    cloud.clock.now = t0 + debounce - 0.001
    for edge in (a, b):
        cloud.core.edges.heartbeat(EdgeHeartbeat(edge, 0.0, 0))
    assert cloud.core.placement.due() is None  # within the debounce period of the last placement
    cloud.clock.now = t0 + debounce
    assert cloud.core.placement.due() == "devices joined"
    cloud.core.placement.place()
    cloud.clock.now += cloud.core.leases.lease_s + 1  # every device's lease runs out; d calls again
    for edge in (a, b):
        cloud.core.edges.heartbeat(EdgeHeartbeat(edge, 0.0, 0))
    cloud.core.devices.authenticate(d.device_id, d.token)
    assert cloud.core.placement.due() == "devices left"
    assert {x.device_id for x in cloud.core.placement.place().devices} == {d.device_id}
    assert cloud.core.placement.due() is None


def test_placement_is_due_when_an_edge_joins_or_is_lost(cloud: Cloud) -> None:
    a = cloud.edge(1)
    assert cloud.core.placement.due() == "edge joined"
    cloud.core.placement.place()
    assert cloud.core.placement.due() is None
    b = cloud.edge(2)
    assert cloud.core.placement.due() == "edge joined"
    cloud.core.placement.place()
    cloud.core.edges.deregister(b)
    assert cloud.core.placement.due() == "edge lost"
    cloud.core.placement.place()
    assert cloud.core.placement.due() is None and cloud.core.placement._placed_alive == {a}


# --- campaigns, reputations, site selection -----------------------------------------------------

def walkers(cloud: Cloud, n: int = 3) -> list[Assignment]:
    """Devices whose traces cross both cells of the grid."""
    cloud.edge(1)
    out = []
    for k in range(n):
        a = cloud.register(f"w{k}", split=2, position=WEST if k % 2 else EAST)
        for p in (WEST, EAST, WEST)[: 2 + k % 2]:
            cloud.clock.now += 0.001
            cloud.core.devices.report_location(LocationReport(a.device_id, a.token, p))
        out.append(a)
    return out


def test_a_campaign_stores_the_allocators_choice_and_hands_out_its_tasks(cloud: Cloud) -> None:
    ws = walkers(cloud)
    cloud.core.registry.set_reputations({ws[0].device_id: 2.5})
    n = len(cloud.changes)
    report = cloud.core.crowdsensing.create_campaign(campaign_spec())
    devices = {d.device_id: d for d in cloud.core.registry.devices()}
    want = campaigns.allocate(campaign_spec(), cloud.core.registry.locations(), {k: d.reputation for k, d in devices.items()},
                              campaigns.DEFAULT_REPUTATION_FLOOR)
    assert len(report.campaign_id) == 12 and int(report.campaign_id, 16) >= 0
    assert (report.status, report.requested_work, report.allocated_work, report.participants, report.dangerous, report.utility) == (
        "running", want.requested, want.allocated, len(want.participants), len(want.dangerous), want.utility)
    assert report.seconds == pytest.approx(want.seconds, abs=1.0) and report.seconds > 0 and report.excluded == want.excluded
    by_device: dict[str, list[Task]] = {}
    for task_id, device_id, cell, slot in want.tasks:
        by_device.setdefault(device_id, []).append(Task(report.campaign_id, task_id, cell, slot))
    assert report.chosen == len(by_device)
    assert [(a.device_id, a.device_name, a.tasks, a.disclosure, a.dangerous) for a in report.allocation] == [
        (d, devices[d].name, t, want.disclosure.get(d, 0.0), d in want.dangerous) for d, t in sorted(by_device.items())]
    assert (report.coverage, report.cells, report.objective, report.latency_s) == (0, 0, 0.0, 0.0)
    assert campaign_report_from_dict(cloud.core.registry.campaign(report.campaign_id)) == report
    assert [t[:4] for t in cloud.core.registry.tasks(report.campaign_id)] == sorted(want.tasks)
    assert len(cloud.changes) == n + 1
    for d, tasks in by_device.items():
        mine = next(w for w in ws if w.device_id == d)
        assert cloud.core.devices.get_assignment(d, mine.token).tasks == sorted(tasks, key=lambda t: (t.slot, t.task_id))
    assert cloud.runs("allocation", "tapp", "ok") == 1.0 and cloud.seconds("allocation") == report.seconds


def test_a_campaign_reports_disclosure_and_dangerous_devices(cloud: Cloud) -> None:
    walkers(cloud, 4)
    report = cloud.core.crowdsensing.create_campaign(campaign_spec(theta=0.01, reporters=[2]))
    devices = {d.device_id: d for d in cloud.core.registry.devices()}
    want = campaigns.allocate(campaign_spec(theta=0.01, reporters=[2]), cloud.core.registry.locations(),
                              {k: d.reputation for k, d in devices.items()}, campaigns.DEFAULT_REPUTATION_FLOOR)
    assert want.dangerous and report.dangerous == len(want.dangerous)
    assert {a.device_id for a in report.allocation if a.dangerous} == want.dangerous
    assert {a.device_id: a.disclosure for a in report.allocation} == want.disclosure
    assert all(a.disclosure > 0 for a in report.allocation)


def test_the_reputation_floor_is_the_specs_when_it_gives_one(cloud: Cloud) -> None:
    ws = walkers(cloud)
    low = ws[0].device_id
    cloud.core.registry.set_reputations({low: 1.0})
    assert low in cloud.core.crowdsensing.create_campaign(campaign_spec()).excluded  # -1: the default floor, 1.8
    assert low in cloud.core.crowdsensing.create_campaign(campaign_spec(reputation_floor=1.0000001)).excluded
    assert cloud.core.crowdsensing.create_campaign(campaign_spec(reputation_floor=0.0)).excluded == []
    assert cloud.core.crowdsensing.create_campaign(campaign_spec(reputation_floor=1.0)).excluded == []


def test_a_campaign_is_held_to_the_cores_limits(cloud: Cloud) -> None:
    walkers(cloud)
    cloud.core.crowdsensing.limits = campaigns.Limits(max_cells=1)
    with pytest.raises(RequestError, match=r"^grid: 2 cells exceed the limit of 1$"):
        cloud.core.crowdsensing.create_campaign(campaign_spec())
    assert cloud.runs("allocation", "tapp", "error") is None  # refused before any allocation ran


def test_a_campaign_that_cannot_be_allocated_is_counted_as_an_error(cloud: Cloud) -> None:
    cloud.edge(1)
    n = len(cloud.changes)
    with pytest.raises(PreconditionError, match=r"^campaign: no device above the reputation floor has a position inside the grid$"):
        cloud.core.crowdsensing.create_campaign(campaign_spec(method="baseline1"))
    assert cloud.runs("allocation", "baseline1", "error") == 1.0 and cloud.seconds("allocation") == 0.0
    assert cloud.runs("allocation", "baseline1", "ok") is None and len(cloud.changes) == n
    assert cloud.core.registry.campaign_count() == 0


def test_a_coverage_campaign_schedules_from_where_devices_are_now(cloud: Cloud) -> None:
    ws = walkers(cloud, 6)
    spec = campaign_spec(method="coverage", subbands=2, rho=0.5)
    report = cloud.core.crowdsensing.create_campaign(spec)
    positions = {d.device_id: (d.lat, d.lon) for d in cloud.core.registry.devices()}
    want = campaigns.allocate_coverage(spec, positions, {w.device_id: campaigns.NEUTRAL_REPUTATION for w in ws},
                                       campaigns.DEFAULT_REPUTATION_FLOOR)
    assert (report.coverage, report.cells, report.objective, report.latency_s) == (want.coverage, want.cells, want.objective, want.latency_s)
    assert [t[:4] for t in cloud.core.registry.tasks(report.campaign_id)] == want.tasks
    assert report.allocation and all(a.disclosure == 0.0 and not a.dangerous for a in report.allocation)  # no privacy model here


def answer(cloud: Cloud, a: Assignment, task: Task, reading: float, frame_id: int):
    f = frame(a, Split(2, 4), frame_id=frame_id)
    f.task, f.reading = task, reading
    return cloud.core.process(f)


def test_the_last_answer_scores_the_campaign_and_publishes_the_reputations(cloud: Cloud) -> None:
    ws = walkers(cloud, 4)
    spec = campaign_spec(reporters=[2])  # two reporters per cell and slot: CrowdPower has readings to compare
    report = cloud.core.crowdsensing.create_campaign(spec)
    tasks = [(next(w for w in ws if w.device_id == a.device_id), t) for a in report.allocation for t in a.tasks]
    assert len(tasks) == 8
    assert cloud.core.crowdsensing.campaign_report(report.campaign_id).results == 0
    for k, (w, t) in enumerate(tasks[:-1]):
        r = answer(cloud, w, t, 0.0 if k == 1 else 0.1 * k, k + 1)  # a reading of 0 is an answer too
        assert r.ok, r.error
        stored = cloud.core.registry.campaign(report.campaign_id)
        assert stored["status"] == "running" and stored["quality"] == []
    again = answer(cloud, *tasks[0], 99.0, 50)  # a resent frame: stored once
    assert again.ok and cloud.core.crowdsensing.campaign_report(report.campaign_id).results == 7
    assert cloud.core.crowdsensing.campaign_report(report.campaign_id).status == "running"
    last = answer(cloud, *tasks[-1], 0.3, 99)
    assert last.cloud_compute_s == 0.0  # the clock stood still while the blocks ran
    label = last.head(BUILTIN_HEAD).label
    stored = cloud.core.registry.campaign(report.campaign_id)  # scored by the last answer, not by asking
    assert stored["status"] == "done"
    rows = cloud.core.registry.tasks(report.campaign_id)
    assert [r[6] for r in rows] == [label] * 8 and all(r[4] for r in rows)
    done = campaign_report_from_dict(stored)
    want = campaigns.score(spec, rows)
    assert len(want) == 4
    names = {w.device_id: f"w{k}" for k, w in enumerate(ws)}
    assert done.quality == [dataclasses.replace(q, device_name=names[d]) for d, q in sorted(want.items())]
    assert done.results == 8
    assert {d.device_id: d.reputation for d in cloud.core.registry.devices() if d.device_id in want} == {
        d: q.reputation for d, q in want.items()}
    for d, q in want.items():
        assert cloud.prom.get_sample_value("ecd_device_reputation", {"device_id": d}) == q.reputation
    asked = cloud.core.crowdsensing.campaign_report(report.campaign_id)
    assert (asked.status, asked.results, asked.quality) == ("done", 8, done.quality)
    quality, floor = cloud.core.crowdsensing.reputations()
    assert floor == campaigns.DEFAULT_REPUTATION_FLOOR
    assert quality == [DeviceQuality(d.device_id, d.name, 0, 0.0, d.reputation, 0) for d in cloud.core.registry.devices()]
    assert {q.device_id for q in quality} == {w.device_id for w in ws}


def test_a_reading_is_taken_up_to_its_bound_exactly(cloud: Cloud) -> None:
    ws = walkers(cloud)
    report = cloud.core.crowdsensing.create_campaign(campaign_spec())
    owner = next(w for w in ws if w.device_id == report.allocation[0].device_id)
    first, second = report.allocation[0].tasks[:2]
    for k, reading in enumerate((MAX_READING * 1.0000001, float("nan"), -float("inf"))):
        r = answer(cloud, owner, first, reading, k + 1)
        assert r.error.status == "INVALID_ARGUMENT" and r.heads == []
        assert r.error.message == f"reading: expected a finite number within ±{MAX_READING:g}, got {reading}"
    assert answer(cloud, owner, first, MAX_READING, 10).ok and answer(cloud, owner, second, -MAX_READING, 11).ok
    assert [r[5] for r in cloud.core.registry.tasks(report.campaign_id) if r[0] in (first.task_id, second.task_id)] == [MAX_READING, -MAX_READING]


def test_a_task_of_another_device_is_refused(cloud: Cloud) -> None:
    ws = walkers(cloud)
    report = cloud.core.crowdsensing.create_campaign(campaign_spec())
    task = report.allocation[0].tasks[0]
    other = next(w for w in ws if w.device_id != report.allocation[0].device_id)
    r = answer(cloud, other, task, 20.0, 1)
    assert r.error.status == "FAILED_PRECONDITION" and r.heads == []
    assert r.error.message == f"task: campaign {task.campaign_id!r} has no task {task.task_id} for device {other.device_id}"
    with pytest.raises(NotFoundError, match=r"^campaign_id: 'nope' is not a campaign of this cloud$"):
        cloud.core.crowdsensing.campaign_report("nope")


def test_a_campaign_with_no_tasks_stays_running(cloud: Cloud) -> None:
    walkers(cloud)
    report = cloud.core.crowdsensing.create_campaign(campaign_spec())
    cloud.core.registry._run(registry_schema.tasks.delete().where(registry_schema.tasks.c.campaign_id == report.campaign_id))
    got = cloud.core.crowdsensing.campaign_report(report.campaign_id)
    assert (got.status, got.results, got.quality) == ("running", 0, [])


def test_site_selection_is_timed_and_counted(cloud: Cloud) -> None:
    cloud.edge(1, A_POS)
    cloud.register(sensors={"temperature": 9.0, "camera": 9.0, "pulse": 9.0, "ambient_temperature": 9.0})
    got = cloud.core.crowdsensing.select_site(SiteRequest("fire", 5.0, 5.0, A_POS))
    assert got.sites and cloud.runs("site_selection", "crowdpower", "ok") == 1.0
    with pytest.raises(RequestError):
        cloud.core.crowdsensing.select_site(SiteRequest("fire", 5.0, 5.0, None))
    assert cloud.runs("site_selection", "crowdpower", "error") == 1.0
    assert cloud.seconds("site_selection") == 0.0  # the clock stood still: both runs took 0 s


# --- heads -------------------------------------------------------------------------------------


def head(name: str, labels: list[str], bias: list[float] | None = None) -> HeadSpec:
    return HeadSpec(M.model_id, name, labels, [0.25] * (len(labels) * len(M.labels)), bias if bias is not None else [], "logits")


def test_a_head_is_stored_and_listed_as_given(cloud: Cloud) -> None:
    assert cloud.core.models.add_head(head("odd", ["even", "odd"], [1.5, -2.0])) == 2
    listed = cloud.core.models.list_heads(M.model_id)
    assert [h.name for h in listed] == [BUILTIN_HEAD, "odd"]
    assert listed[1] == HeadSpec(M.model_id, "odd", ["even", "odd"], [0.25] * 20, [1.5, -2.0], "logits")
    assert listed[0].labels == list(M.labels) and listed[0].model_id == M.model_id
    assert cloud.core.registry.heads(M.model_id)[0]["bias"] == [1.5, -2.0]
    assert cloud.core.models.add_head(head("odd", ["a", "b", "c"])) == 2  # replaced
    assert cloud.core.models.list_heads(M.model_id)[1].bias == [0.0, 0.0, 0.0]


def test_head_limits_are_exact(cloud: Cloud) -> None:
    labels = [f"l{k}" for k in range(MAX_HEAD_LABELS)]
    assert cloud.core.models.add_head(head("wide", labels)) == 2
    with pytest.raises(LimitError, match=rf"^labels: at most {MAX_HEAD_LABELS} per head, got {MAX_HEAD_LABELS + 1}$"):
        cloud.core.models.add_head(head("wider", labels + ["x"]))
    with pytest.raises(RequestError, match=r"^labels\[1\]: control characters are not allowed"):
        cloud.core.models.add_head(head("bad", ["a", "b\x07"]))
    for k in range(MAX_HEADS_PER_MODEL - 2):
        cloud.core.models.add_head(head(f"h{k}", ["a"]))
    assert len(cloud.core.models.list_heads(M.model_id)) == MAX_HEADS_PER_MODEL
    with pytest.raises(LimitError, match=rf"^name: {M.model_id} already has {MAX_HEADS_PER_MODEL} heads \(the limit\); replace one instead$"):
        cloud.core.models.add_head(head("one_more", ["a"]))
    assert cloud.core.models.add_head(head("h0", ["b"])) == MAX_HEADS_PER_MODEL  # replacing one at the limit is fine
