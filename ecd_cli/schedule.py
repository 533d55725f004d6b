"""``ecd schedule ...``: an operator's commands against a running cloud server.

``ecd schedule place --cloud HOST:PORT [--method otacs_ls]`` computes and applies a new placement
(which edge nodes are active, which device streams to which edge); ``ecd schedule placement`` shows
the one in force. ``--export FILE`` writes the placement instance in ``ecd placement solve
--instance`` format, so the same decision can be reproduced offline. ``ecd schedule campaign create``
allocates a sensing campaign over the devices' traces (TAPP), ``campaign show`` follows it, and
``ecd schedule reputation`` lists the devices' CrowdPower reputations.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ecd.errors import ConfigError
from ecd.types import Position
from ecd.scheduler_types import CampaignReport, CampaignSpec, Grid, PlacementReport, SiteRequest
from ecd_cli.fmt import print_table


def _client(args: argparse.Namespace):
    from cloud_server.scheduler_service import SchedulerClient

    from ecd.transport import tls

    credentials = tls.load(args.tls_dir, args.tls_name)
    tls.check_plaintext(credentials, tls.host_of(args.cloud), args.insecure, "--cloud")
    return SchedulerClient(args.cloud, tls=credentials)


def _cloud_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cloud", required=True, help="the cloud server, HOST:PORT")
    p.add_argument("--tls-dir", default="", help="folder from `ecd certs init` holding ca.pem and the operator's certificate")
    p.add_argument("--tls-name", default="operator", help="the operator's certificate in --tls-dir (NAME.pem, NAME.key)")
    p.add_argument("--insecure", "--allow-plaintext", dest="insecure", action="store_true",
                   help="plaintext on purpose to a non-loopback cloud (anyone on the network can read the answers)")


def _show(report: PlacementReport, args: argparse.Namespace) -> int:
    if args.export:
        Path(args.export).write_text(report.instance_json or "{}")
    if args.json:
        print(json.dumps(dataclasses.asdict(report), indent=2))
        return 0
    print(f"placement v{report.version} by {report.method} ({report.trigger}): total cost {report.total_cost:.3f} "
          f"= activation {report.activation_cost:.3f} + service {report.service_cost:.3f}; solved in {report.seconds:.3f} s")
    by_edge: dict[str, list[str]] = {}
    for d in report.devices:
        by_edge.setdefault(d.edge_id, []).append(d.device_name or d.device_id)
    rows = [
        [e.edge_id, e.endpoint, "-" if e.position is None else f"{e.position.lat:.4f},{e.position.lon:.4f}",
         "yes" if e.alive else "no", "yes" if e.active else "no", e.devices, ", ".join(sorted(by_edge.get(e.edge_id, [])))]
        for e in report.edges
    ]
    print_table(["edge", "endpoint", "position", "alive", "active", "devices", "device names"], rows)
    unplaced = by_edge.get("", [])
    if unplaced:
        print(f"not placed (no alive edge node): {', '.join(sorted(unplaced))}")
    if args.export:
        print(f"instance written to {args.export} (ecd placement solve --instance {args.export} --method {report.method})")
    return 0


def cmd_place(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        return _show(client.place(args.method, args.seed), args)
    finally:
        client.close()


def cmd_show(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        return _show(client.placement(), args)
    finally:
        client.close()


def _grid(args: argparse.Namespace) -> Grid:
    try:
        s, w, n, e = (float(v) for v in args.grid.split(","))
    except ValueError:
        raise ConfigError(f"--grid: expected SOUTH,WEST,NORTH,EAST in degrees, got {args.grid!r}") from None
    return Grid(Position(s, w), Position(n, e), args.rows, args.cols)


def _show_campaign(report: CampaignReport, args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(dataclasses.asdict(report), indent=2))
        return 0
    s = report.spec
    if report.cells:  # a coverage-aware campaign (paper 004)
        print(f"campaign {report.campaign_id} {s.name!r} by {s.method} (rho {s.rho:g}, {s.subbands or 4} subbands), "
              f"{s.grid.rows}x{s.grid.cols} cells x {s.slots} slots: {report.chosen} of {report.participants} devices "
              f"scheduled, covering {report.coverage} of {report.cells} cells, latency {report.latency_s:.3f} s, objective "
              f"{report.objective:.4f}, {report.allocated_work} tasks, allocated in {report.seconds:.3f} s; "
              f"{report.status}, {report.results} answered")
    else:
        print(f"campaign {report.campaign_id} {s.name!r} by {s.method} (theta {s.theta:g}), {s.grid.rows}x{s.grid.cols} cells x "
              f"{s.slots} slots: {report.allocated_work} of {report.requested_work} tasks to {report.chosen} of "
              f"{report.participants} devices, {report.dangerous} dangerous (utility {report.utility:.3f}), allocated in "
              f"{report.seconds:.3f} s; {report.status}, {report.results} answered")
    if report.excluded:
        print(f"left out for their reputation: {', '.join(report.excluded)}")
    quality = {q.device_id: q for q in report.quality}
    rows = []
    for d in report.allocation:
        q = quality.get(d.device_id)
        rows.append([d.device_name or d.device_id, len(d.tasks), f"{d.disclosure:.3f}", "yes" if d.dangerous else "no",
                     "-" if q is None else f"{q.quality:.3f}", "-" if q is None else f"{q.reputation:.3f}",
                     "-" if q is None else q.outliers])
    print_table(["device", "tasks", "disclosure", "dangerous", "quality", "reputation", "outliers"], rows)
    return 0


def cmd_campaign_create(args: argparse.Namespace) -> int:
    try:
        reporters = [int(v) for v in args.reporters.split(",")]
    except ValueError:
        raise ConfigError(f"--reporters: expected whole numbers, one or one per cell, got {args.reporters!r}") from None
    spec = CampaignSpec(args.name, _grid(args), args.slots, reporters, args.method, args.theta, args.time_threshold,
                        args.reputation_floor, args.subbands, args.rho)
    client = _client(args)
    try:
        return _show_campaign(client.create_campaign(spec), args)
    finally:
        client.close()


def cmd_campaign_show(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        return _show_campaign(client.campaign(args.campaign_id), args)
    finally:
        client.close()


def cmd_reputation(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        devices, floor = client.reputations()
    finally:
        client.close()
    if args.json:
        print(json.dumps({"floor": floor, "devices": [dataclasses.asdict(d) for d in devices]}, indent=2))
        return 0
    print_table(["device", "name", "reputation", ""],
                [[d.device_id, d.device_name, f"{d.reputation:.3f}", "below the floor" if d.reputation < floor else ""]
                 for d in devices])
    print(f"floor {floor:g}: devices below it are not chosen for campaigns")
    return 0


def cmd_site(args: argparse.Namespace) -> int:
    request = SiteRequest(args.event, args.level, args.budget, Position.parse(args.position, "--position"))
    client = _client(args)
    try:
        selection = client.select_site(request)
    finally:
        client.close()
    if args.json:
        print(json.dumps(dataclasses.asdict(selection), indent=2))
        return 0
    print_table(["edge node", "eligible", "why not", "quality", "group", "price", "distance m", "score"],
                [[s.site, "yes" if s.eligible else "no", s.reason, f"{s.quality:.2f}", len(s.group), f"{s.price:.2f}",
                  f"{s.proximity_m:.0f}", f"{s.score:.1f}"] for s in selection.sites])
    print(f"chosen: {selection.chosen or 'none qualifies'}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        client.revoke(args.device_id)
    finally:
        client.close()
    print(f"{args.device_id}: token revoked (refused by the cloud now, by edge nodes from their next heartbeat)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    sch = sub.add_parser("schedule", help="operate the schedulers of a running cloud server (placement, campaigns, reputation)")
    schsub = sch.add_subparsers(dest="schedule_command", required=True)
    for name, helptext, func in (("place", "compute and apply a new placement", cmd_place),
                                 ("placement", "show the placement in force", cmd_show)):
        p = schsub.add_parser(name, help=helptext)
        _cloud_arguments(p)
        if name == "place":
            p.add_argument("--method", default="", help="otacs_ls, otacs, ttacs, exact, lf, dis, random, ... (default: the cloud's)")
            p.add_argument("--seed", type=int, default=0)
        p.add_argument("--export", help="write the placement instance (JSON, `ecd placement solve --instance` format) here")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)
    camp = schsub.add_parser("campaign", help="sensing campaigns: TAPP over the devices' traces, or coverage-aware over their positions")
    campsub = camp.add_subparsers(dest="campaign_command", required=True)
    p = campsub.add_parser("create", help="allocate a campaign and hand its tasks to the chosen devices")
    _cloud_arguments(p)
    p.add_argument("--name", default="campaign")
    p.add_argument("--grid", required=True, help="the area, SOUTH,WEST,NORTH,EAST in degrees")
    p.add_argument("--rows", type=int, default=3)
    p.add_argument("--cols", type=int, default=3)
    p.add_argument("--slots", type=int, default=8, help="time slots (>= 8 for reputations to move, see docs)")
    p.add_argument("--reporters", default="2", help="reports per slot in each cell: one number, or one per cell (row-major)")
    p.add_argument("--method", default="tapp", help="tapp, baseline1, baseline2 (paper 002; tapp_plus is ours) or coverage, "
                   "coverage_benchmark1|2|3 (paper 004; coverage_exact is ours)")
    p.add_argument("--theta", type=float, default=0.5, help="TAPP's privacy threshold (KL disclosure)")
    p.add_argument("--time-threshold", type=int, default=0, help="tasks one device may be given (0 = the number of slots)")
    p.add_argument("--reputation-floor", type=float, default=-1.0, help="devices below it are not chosen (< 0 = the cloud's default)")
    p.add_argument("--subbands", type=int, default=0, help="coverage methods: the base station's subbands, fewer than the devices (0 = 4)")
    p.add_argument("--rho", type=float, default=0.5, help="coverage methods: weight of latency against coverage, in [0, 1]")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_campaign_create)
    p = campsub.add_parser("show", help="a campaign's allocation, answers and (once done) CrowdPower scores")
    p.add_argument("campaign_id")
    _cloud_arguments(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_campaign_show)
    p = schsub.add_parser("site", help="CrowdPower site selection: which edge node's area should sense an event")
    _cloud_arguments(p)
    p.add_argument("--event", required=True, help="traffic_conditions, traffic_accident, fire, storm, heart_attack, volcanic_eruption")
    p.add_argument("--level", type=float, default=5.0, help="phone quality wanted, 0..10")
    p.add_argument("--budget", type=float, default=5.0, help="the most the chosen group may cost (each device costs 1)")
    p.add_argument("--position", required=True, help="where the event is, LAT,LON in degrees")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_site)
    p = schsub.add_parser("revoke", help="revoke a device's token (a lost or stolen device)")
    p.add_argument("device_id")
    _cloud_arguments(p)
    p.set_defaults(func=cmd_revoke)
    p = schsub.add_parser("reputation", help="every device's CrowdPower reputation and the floor")
    _cloud_arguments(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reputation)
