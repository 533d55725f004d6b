"""The cloud core's crowdsensing (cloud_server/crowdsensing.py): campaigns, their scoring into
reputations, site selection, exactly, on the test's clock."""

from __future__ import annotations

import dataclasses

import pytest
from cloud_core_harness import (
    A_POS,
    EAST,
    WEST,
    Cloud,
    campaign_spec,
    frame,
)

from cloud_server import campaigns, registry_schema
from cloud_server.core import MAX_READING
from cloud_server.crowdsensing import campaign_report_from_dict
from cloud_server.heads import BUILTIN_HEAD
from ecd.errors import (
    NotFoundError,
    PreconditionError,
    RequestError,
)
from ecd.scheduler_types import (
    DeviceQuality,
    SiteRequest,
)
from ecd.types import (
    Assignment,
    LocationReport,
    Split,
    Task,
)

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
