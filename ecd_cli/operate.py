"""``ecd schedule ...``: an operator's commands against a running cloud server.

``ecd schedule place --cloud HOST:PORT [--method otacs_ls]`` computes and applies a new placement
(which edge nodes are active, which device streams to which edge); ``ecd schedule placement`` shows
the one in force. ``--export FILE`` writes the placement instance in ``ecd placement solve
--instance`` format, so the same decision can be reproduced offline.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ecd.types import PlacementReport
from ecd_cli.fmt import print_table


def _client(args: argparse.Namespace):
    from cloud_server.service import SchedulerClient

    return SchedulerClient(args.cloud)


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


def register(sub: argparse._SubParsersAction) -> None:
    sch = sub.add_parser("schedule", help="operate the schedulers of a running cloud server (placement)")
    schsub = sch.add_subparsers(dest="schedule_command", required=True)
    for name, helptext, func in (("place", "compute and apply a new placement", cmd_place),
                                 ("placement", "show the placement in force", cmd_show)):
        p = schsub.add_parser(name, help=helptext)
        p.add_argument("--cloud", required=True, help="the cloud server, HOST:PORT")
        if name == "place":
            p.add_argument("--method", default="", help="otacs_ls, otacs, ttacs, exact, lf, dis, random, ... (default: the cloud's)")
            p.add_argument("--seed", type=int, default=0)
        p.add_argument("--export", help="write the placement instance (JSON, `ecd placement solve --instance` format) here")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)
