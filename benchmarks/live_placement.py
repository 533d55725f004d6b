"""One live re-placement and one TAPP campaign in the cloud, against the data plane's frame time,
measured in one run.

The cloud's registry (SQLite, a temporary file) holds E edge nodes and D devices at random positions
in a 20 km square around Manhattan; ``CloudCore.place`` reads them, solves paper 003's placement
(default ``otacs_ls``), and writes every device's edge back — what happens when an edge node joins or
is lost. Then one TAPP campaign (paper 002) over the same devices, each with a 10-point trace: 3x3
cells, 8 slots, ``--reporters`` reports per slot and cell, allocated and written as tasks. The data
plane's frame time is measured beside it: one device agent streaming held-out
images through an edge node and the cloud on loopback, one frame in flight (p50 capture-to-result).

    python benchmarks/live_placement.py [--edges 50] [--devices 5000] [--method otacs_ls] [--reporters 60] [--out results/live_placement.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from cloud_server.core import CloudCore
from cloud_server.served import load_models
from cloud_server.registry import Registry
from cloud_server.config import CloudConfig
from cloud_server.service import start_cloud
from device_agent.agent import AgentConfig, DeviceAgent
from device_agent.sources import heldout
from ecd.transport.rpc import LoopThread, wait_healthy
from ecd.types import Position
from ecd.scheduler_types import CampaignSpec, Grid
from edge_node.service import EdgeConfig, start_edge

CENTRE = (40.75, -73.98)
HALF_SIDE_DEG = (0.09, 0.12)  # about 10 km each way


def populate(registry: Registry, edges: int, devices: int, seed: int) -> None:
    rng = np.random.default_rng(seed)

    def where() -> tuple[float, float]:
        return (CENTRE[0] + rng.uniform(-HALF_SIDE_DEG[0], HALF_SIDE_DEG[0]),
                CENTRE[1] + rng.uniform(-HALF_SIDE_DEG[1], HALF_SIDE_DEG[1]))

    for j in range(edges):
        lat, lon = where()
        registry.add_edge(f"10.0.{j // 250}.{j % 250}:50061", 100.0, lat=lat, lon=lon)
    edge_ids = [e.edge_id for e in registry.edges()]
    for i in range(devices):
        lat, lon = where()
        registry.add_device(name=f"d{i}", profile="pi4", radio="wifi", w_energy=0.5, w_privacy=0.5, min_split=0,
                            model_id="digits_cnn", model_version="v", split_device=3, split_edge=5, encoding="float32",
                            edge_id=edge_ids[i % len(edge_ids)], lat=lat, lon=lon)


def scheduler_seconds(edges: int, devices: int, method: str, reporters: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="ecd-bench-") as tmp:
        registry = Registry(Path(tmp) / "cloud.sqlite3")
        t0 = time.perf_counter()
        populate(registry, edges, devices, seed)
        rng = np.random.default_rng(seed + 1)
        for d in registry.devices():  # a 10-point walk around where each device is
            for step in range(10):
                registry.record_location(d.device_id, d.lat + rng.normal(0, 0.01), d.lon + rng.normal(0, 0.01), step)
        fill_s = time.perf_counter() - t0
        core = CloudCore(registry, load_models(["digits_cnn"]), edge_timeout_s=3600.0, placement_method=method)
        t0 = time.perf_counter()
        report = core.placement.place(trigger="benchmark")
        total_s = time.perf_counter() - t0
        sw = Position(CENTRE[0] - HALF_SIDE_DEG[0], CENTRE[1] - HALF_SIDE_DEG[1])
        ne = Position(CENTRE[0] + HALF_SIDE_DEG[0], CENTRE[1] + HALF_SIDE_DEG[1])
        spec = CampaignSpec("bench", Grid(sw, ne, 3, 3), slots=8, reporters=[reporters], method="tapp", theta=1.0)
        t0 = time.perf_counter()
        campaign = core.crowdsensing.create_campaign(spec)
        campaign_s = time.perf_counter() - t0
        registry.close()
    return {
        "edges": edges, "devices": devices, "method": method, "seconds": total_s, "solver_seconds": report.seconds,
        "registry_fill_seconds": fill_s, "active_edges": sum(e.active for e in report.edges),
        "total_cost": report.total_cost, "campaign_seconds": campaign_s, "campaign_tapp_seconds": campaign.seconds,
        "campaign_tasks": campaign.allocated_work, "campaign_chosen": campaign.chosen,
        "campaign_dangerous": campaign.dangerous,
    }


def frame_seconds(frames: int) -> float:
    """p50 capture-to-result of one device on loopback tiers, one frame in flight."""
    loop = LoopThread()
    with tempfile.TemporaryDirectory(prefix="ecd-bench-") as tmp:
        cloud = loop.run(start_cloud(replace(CloudConfig(), db=str(Path(tmp) / "c.sqlite3"), metrics_port=-1)))
        edge = loop.run(start_edge(replace(EdgeConfig(), cloud=f"127.0.0.1:{cloud.port}", metrics_port=-1,
                                           model_dir=str(Path(tmp) / "edge"))))
        wait_healthy(f"127.0.0.1:{edge.port}")
        agent = DeviceAgent(AgentConfig(cloud=f"127.0.0.1:{cloud.port}", split=3, max_in_flight=1, follow=False,
                                        model_dir=str(Path(tmp) / "agent")))
        try:
            agent.connect()
            outcomes = agent.run(heldout("digits_cnn", frames))
        finally:
            agent.close()
            loop.run(edge.stop(0))
            loop.run(cloud.stop(0))
            loop.close()
    return float(np.median([o.latency_s for o in outcomes]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=50)
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--method", default="otacs_ls")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--reporters", type=int, default=60, help="campaign: reports per slot and cell")
    parser.add_argument("--out", default="results/live_placement.json")
    args = parser.parse_args()
    frame_s = frame_seconds(args.frames)
    r = scheduler_seconds(args.edges, args.devices, args.method, args.reporters, args.seed)
    r["frame_seconds_p50"] = frame_s
    r["replacement_over_frame"] = r["seconds"] / frame_s
    r["campaign_over_frame"] = r["campaign_seconds"] / frame_s
    print(f"one live re-placement, {r['edges']} edge nodes x {r['devices']} devices, {r['method']}: "
          f"{r['seconds']:.2f} s (solver {r['solver_seconds']:.2f} s, the rest registry reads and writes); "
          f"{r['active_edges']} edges active, total cost {r['total_cost']:.1f}")
    print(f"one TAPP campaign over the {r['devices']} devices' traces: {r['campaign_seconds']:.2f} s "
          f"(TAPP {r['campaign_tapp_seconds']:.2f} s, the rest traces in and tasks out); {r['campaign_tasks']} tasks to "
          f"{r['campaign_chosen']} devices, {r['campaign_dangerous']} dangerous")
    print(f"data plane frame time (p50, loopback, 1 in flight, split 3): {frame_s * 1e3:.2f} ms; "
          f"one re-placement = {r['replacement_over_frame']:.0f} frame times, one campaign = {r['campaign_over_frame']:.0f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(r, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
