"""The crowdsensing side of the running cloud: campaigns allocated over the live devices (paper 002,
see :mod:`cloud_server.campaigns`), their readings scored into reputations when every task is
answered (paper 001's CrowdPower), and site selection for an event (paper 001 §3.6, see
:mod:`cloud_server.sites`).

:class:`Crowdsensing` is the one writer of campaigns, their tasks' answers and the devices'
reputations; each scheduler run is counted and timed in the scheduler metrics where it happens.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from typing import Any, Callable

from cloud_server import campaigns, sites
from cloud_server.edges import Edges
from cloud_server.heads import BUILTIN_HEAD
from cloud_server.leader import SchedulerLeader
from cloud_server.leases import Leases
from cloud_server.registry import Registry
from ecd.clock import SYSTEM_CLOCK, Clock
from ecd.errors import NotFoundError, PreconditionError
from ecd.scheduler_types import CampaignReport, CampaignSpec, DeviceQuality, DeviceTasks, Grid, SiteRequest, SiteSelection
from ecd.types import Frame, Position, Result, Task

log = logging.getLogger("ecd.cloud")


class Crowdsensing:
    def __init__(self, registry: Registry, edges: Edges, leases: Leases, leader: SchedulerLeader,
                 on_change: Callable[[], None] = lambda: None, clock: Clock = SYSTEM_CLOCK):
        self.registry = registry
        self.edges = edges
        self.leases = leases
        self.leader = leader  # only the leader runs the schedulers; a follower refuses, naming it
        self.on_change = on_change  # the transport wakes the assignment watchers (tasks are in assignments)
        self.clock = clock
        self.limits = campaigns.Limits()
        self.metrics: Any = None  # SchedulerMetrics, or None

    def _ran(self, scheduler: str, method: str, outcome: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.run(scheduler, method, outcome, seconds)

    def create_campaign(self, spec: CampaignSpec) -> CampaignReport:
        """Allocate a campaign's tasks over the live devices and hand them out (each chosen device
        sees its tasks in its assignment). Only on the leading replica (NotLeaderError names it)."""
        campaigns.check_spec(spec, self.limits)
        self.leader.fence()
        floor = spec.reputation_floor if spec.reputation_floor >= 0 else campaigns.DEFAULT_REPUTATION_FLOOR
        devices = {d.device_id: d for d in self.registry.devices(self.leases.live_since())}
        reputations = {k: d.reputation for k, d in devices.items()}
        try:
            if spec.method in campaigns.COVERAGE_METHODS:  # where each device is now
                positions = {k: (d.lat, d.lon) for k, d in devices.items() if d.lat is not None and d.lon is not None}
                alloc = campaigns.allocate_coverage(spec, positions, reputations, floor)
            else:  # where each device has been (its trace)
                traces = {k: v for k, v in self.registry.locations().items() if k in devices}
                alloc = campaigns.allocate(spec, traces, reputations, floor)
        except Exception:
            self._ran("allocation", spec.method, "error", 0.0)
            raise
        campaign_id = uuid.uuid4().hex[:12]
        by_device: dict[str, list[Task]] = {}
        for task_id, device_id, cell, slot in alloc.tasks:
            by_device.setdefault(device_id, []).append(Task(campaign_id, task_id, cell, slot))
        report = CampaignReport(
            campaign_id=campaign_id, spec=spec, status="running", requested_work=alloc.requested,
            allocated_work=alloc.allocated, participants=len(alloc.participants), chosen=len(by_device),
            dangerous=len(alloc.dangerous), utility=alloc.utility, seconds=alloc.seconds,
            allocation=[DeviceTasks(d, devices[d].name, t, alloc.disclosure.get(d, 0.0), d in alloc.dangerous)
                        for d, t in sorted(by_device.items())],
            excluded=alloc.excluded, coverage=alloc.coverage, cells=alloc.cells, objective=alloc.objective,
            latency_s=alloc.latency_s,
        )
        # the campaign first, then its tasks: a crash between them leaves a campaign with no tasks,
        # never tasks no campaign answers for
        self.registry.put_campaign(campaign_id, dataclasses.asdict(report))
        self.registry.add_tasks(campaign_id, alloc.tasks)
        self._ran("allocation", spec.method, "ok", alloc.seconds)
        log.info("[CloudServer.CreateCampaign] %s %r by %s: %d of %d tasks to %d devices, %d dangerous", campaign_id,
                 spec.name, spec.method, alloc.allocated, alloc.requested, len(by_device), len(alloc.dangerous))
        self.on_change()
        return report

    def campaign_report(self, campaign_id: str) -> CampaignReport:
        """The campaign as it stands; the first report after its last answer scores it."""
        stored = self.registry.campaign(campaign_id)
        if stored is None:
            raise NotFoundError(f"campaign_id: {campaign_id!r} is not a campaign of this cloud")
        report = campaign_report_from_dict(stored)
        rows = self.registry.tasks(campaign_id)
        report.results = sum(1 for r in rows if r[4])
        if report.status == "running" and rows and report.results == len(rows):
            report = self._finish(report, rows)
        return report

    def _finish(self, report: CampaignReport, rows: list) -> CampaignReport:
        """Every task answered: CrowdPower scores the reports; reputations go to the registry."""
        quality = campaigns.score(report.spec, rows)
        self.registry.set_reputations({d: q.reputation for d, q in quality.items()})
        names = {d.device_id: d.name for d in self.registry.devices()}
        report.quality = [dataclasses.replace(q, device_name=names.get(d, "")) for d, q in sorted(quality.items())]
        report.status = "done"
        self.registry.put_campaign(report.campaign_id, dataclasses.asdict(report))
        if self.metrics is not None:
            self.metrics.reputations(report.quality)
        log.info("[CloudServer.Campaign] %s done: %d reports scored", report.campaign_id, sum(q.reports for q in report.quality))
        return report

    def answer_task(self, frame: Frame, result: Result) -> None:
        """Record the reading a frame carries for its task (the label the cloud read with it)."""
        task = frame.task
        label = result.head(BUILTIN_HEAD).label if result.head(BUILTIN_HEAD) else ""
        state = self.registry.answer_task(task.campaign_id, task.task_id, frame.device_id, frame.reading, label)
        if state == "not yours":
            raise PreconditionError(f"task: campaign {task.campaign_id!r} has no task {task.task_id} for device {frame.device_id}")
        if state == "new" and self.registry.unanswered(task.campaign_id) == 0:
            self.campaign_report(task.campaign_id)  # the last answer: score the campaign now

    def select_site(self, req: SiteRequest) -> SiteSelection:
        """CrowdPower's site selection over the alive edge nodes and the live devices placed on them.
        Only on the leading replica (NotLeaderError names it)."""
        self.leader.fence()
        t0 = self.clock.perf_counter()
        try:
            selection = sites.select(req, self.edges.alive(), self.registry.devices(self.leases.live_since()))
        except Exception:
            self._ran("site_selection", "crowdpower", "error", self.clock.perf_counter() - t0)
            raise
        self._ran("site_selection", "crowdpower", "ok", self.clock.perf_counter() - t0)
        return selection

    def reputations(self) -> tuple[list[DeviceQuality], float]:
        """Every device's reputation (and the default floor the next campaign applies)."""
        return [DeviceQuality(d.device_id, d.name, 0, 0.0, d.reputation, 0) for d in self.registry.devices()], \
            campaigns.DEFAULT_REPUTATION_FLOOR


def campaign_report_from_dict(d: dict) -> CampaignReport:
    """A campaign as the registry stores it (its report as a JSON object) back to the record."""
    spec = dict(d["spec"])
    g = spec.pop("grid")
    grid = Grid(Position(**g["south_west"]), Position(**g["north_east"]), g["rows"], g["cols"])
    return CampaignReport(
        **{k: v for k, v in d.items() if k not in ("spec", "allocation", "quality")},
        spec=CampaignSpec(grid=grid, **spec),
        allocation=[DeviceTasks(**{**a, "tasks": [Task(**t) for t in a["tasks"]]}) for a in d["allocation"]],
        quality=[DeviceQuality(**q) for q in d["quality"]],
    )
