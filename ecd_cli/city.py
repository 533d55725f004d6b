"""The demo's third part: the schedulers driving a running system, on real check-in traces.

A cloud server, three edge nodes at positions and six device agents replaying the most active
Foursquare NYC participants' check-ins (one of them sending corrupted sensor readings) run on
loopback, in this process: placement (paper 003) picks each device's edge node, a TAPP campaign
(paper 002) hands out sensing tasks over the traces, CrowdPower (paper 001) scores the reports into
reputations, and the next campaign leaves the misbehaving device out.

This is orchestration, so it lives with the command that runs it; every decision it prints is made
by the services it starts.
"""

from __future__ import annotations

import tempfile
import threading
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cloud_server.config import CloudConfig
from cloud_server.service import start_cloud
from cloud_server.scheduler_service import SchedulerClient
from device_agent.agent import AgentConfig, DeviceAgent, RunReport
from device_agent.sources import heldout
from ecd import certs
from ecd.transport import tls
from ecd.errors import ConfigError, EcdError
from ecd.transport.rpc import LoopThread, wait_healthy
from ecd.types import Position
from ecd.scheduler_types import CampaignReport, CampaignSpec, Grid, PlacementReport
from edge_node.service import EdgeConfig, start_edge
from research.foursquare import read_checkins

DEVICES = 6


@dataclass
class CityRun:
    placement: PlacementReport
    campaign: CampaignReport
    second: CampaignReport
    reputations: dict[str, float]
    floor: float
    reports: list[RunReport]
    names: dict[str, str]  # device id -> name
    edge_names: dict[str, str]  # edge id -> name


def traces(checkins: str, devices: int = DEVICES) -> list[tuple[str, np.ndarray]]:
    """The ``devices`` participants with the most check-ins, each as (lat, lon) points in time order."""
    by_tid: dict[str, list] = defaultdict(list)
    for c in read_checkins(checkins):
        by_tid[c.tid].append((c.when, c.lat, c.lon))
    best = sorted(by_tid, key=lambda t: (-len(by_tid[t]), t))[:devices]
    if len(best) < devices:
        raise ConfigError(f"--checkins: {checkins} has fewer than {devices} participants")
    return [(tid, np.array([(lat, lon) for _, lat, lon in sorted(by_tid[tid])])) for tid in best]


def run_city(checkins: str, frames: int = 40) -> CityRun:
    people = traces(checkins)
    points = np.vstack([p for _, p in people])
    lo, hi = np.percentile(points, 5, axis=0), np.percentile(points, 95, axis=0)
    grid = Grid(Position(*lo), Position(*hi), rows=1, cols=2)
    # three edge nodes along the area's north-south axis, at its 20th, 50th and 80th percentiles
    lats = np.percentile(points[:, 0], [20, 50, 80])
    lon = float(np.median(points[:, 1]))
    loop = LoopThread()
    agents: list[DeviceAgent] = []
    with tempfile.TemporaryDirectory(prefix="ecd-city-") as tmp:
        d = Path(tmp)
        folder = str(d / "tls")  # mutual TLS between every tier, as deployed
        certs.init(folder, certs.default_holders(edges=len(lats), devices=len(people)))
        cloud = loop.run(start_cloud(replace(CloudConfig(), db=str(d / "cloud.sqlite3"), metrics_port=-1,
                                             placement_check_s=0.5, placement_activation_cost=2.0, tls_dir=folder)))
        target = f"127.0.0.1:{cloud.port}"
        edges = [loop.run(start_edge(replace(EdgeConfig(), cloud=target, metrics_port=-1, model_dir=str(d / f"edge{k}"),
                                             position=f"{lat:.5f},{lon:.5f}", tls_dir=folder, tls_name=f"edge-{k + 1}")))
                 for k, lat in enumerate(lats)]
        operator = tls.load(folder, "operator")
        client = SchedulerClient(target, tls=operator)
        try:
            wait_healthy(target, tls=operator, server_role="cloud")
            for k, (tid, trace) in enumerate(people):
                path = d / f"trace{k}.csv"
                path.write_text("".join(f"{lat},{lon}\n" for lat, lon in trace))
                agent = DeviceAgent(AgentConfig(cloud=target, name=f"fsq-{tid}", split=3, encoding="int8", trace=str(path),
                                                trace_every=max(frames // len(trace), 1), sensor_seed=k,
                                                model_dir=str(d / f"agent{k}"), tls_dir=folder, tls_name=f"device-{k + 1}"))
                agents.append(agent)
                agent.connect()
                for position in trace[1:]:  # the cloud learns the whole trace before the campaign
                    agent.report_location(Position(*position))
            placement = client.place()
            for agent in agents:
                agent.wait_for_placement(placement.version)
            spec = CampaignSpec("heat map", grid, slots=16, reporters=[3], method="tapp", theta=1.0)
            campaign = client.create_campaign(spec)
            tasks = {t.device_id: len(t.tasks) for t in campaign.allocation}
            # the device TAPP gave the most tasks misbehaves: it sends biased, noisy readings
            corrupt = max(campaign.allocation, key=lambda t: (len(t.tasks), t.device_id)).device_id
            for agent in agents:
                if agent.assignment.device_id == corrupt:
                    agent.sensor.corrupt = True
                    agent.cfg = replace(agent.cfg, name=agent.cfg.name + "-corrupt", corrupt_reports=True)
            reports: list[RunReport | None] = [None] * len(agents)
            errors: list[BaseException] = []

            def stream(k: int, agent: DeviceAgent) -> None:
                try:
                    agent.wait_for_tasks(tasks.get(agent.assignment.device_id, 0))
                    reports[k] = agent.report(agent.run(heldout("digits_cnn", frames)))
                except BaseException as e:  # noqa: BLE001 — re-raised below, in the caller's thread
                    errors.append(e)

            threads = [threading.Thread(target=stream, args=(k, a)) for k, a in enumerate(agents)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(300)
            if errors:
                raise EcdError(f"a device agent failed: {errors[0]}")
            campaign = client.campaign(campaign.campaign_id)
            second = client.create_campaign(replace(spec, name="heat map, next day", reporters=[2]))
            reputations, floor = client.reputations()
        finally:
            client.close()
            for agent in agents:
                agent.close()
            for edge in edges:
                loop.run(edge.stop(0))
            loop.run(cloud.stop(0))
            loop.close()
    return CityRun(
        placement=placement, campaign=campaign, second=second,
        reputations={q.device_id: q.reputation for q in reputations}, floor=floor,
        reports=[r for r in reports if r is not None],
        names={a.assignment.device_id: a.cfg.name for a in agents},
        edge_names={e.edge_id: f"edge-{k}" for k, e in enumerate(edges)},
    )
