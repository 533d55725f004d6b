"""``ecd demo``: the README's main job — the per-split check, then the three tiers on loopback."""

from __future__ import annotations

import argparse
import sys

from ecd.errors import ConfigError
from ecd.launch import DemoDevice, DemoRun, Serving, run_demo
from ecd.zoo import DEFAULT_MODEL
from ecd_cli.fmt import print_table
from ecd_cli.exits import CHECK_FAILED
from ecd_cli.models import run_check


def cmd_demo(args: argparse.Namespace) -> int:
    if args.frames < 1:
        raise ConfigError(f"--frames: expected >= 1, got {args.frames}")
    print("== 1. the bundled model, split at every point in one process ==")
    if run_check(DEFAULT_MODEL, runs=20, samples=None) != 0:
        return CHECK_FAILED
    print("\n== 2. three tiers on loopback, mutual TLS: cloud server, edge node, device agents ==", flush=True)
    run = run_demo(frames=args.frames, serve=serve_until_stopped if args.serve else None)
    print_run(run, table=not args.serve)  # --serve printed the table before serving
    if run.failed:
        return 1
    if args.serve:
        return 0
    if not args.checkins:
        print("\n(part 3, the schedulers on real check-in traces, runs with --checkins FILE: see the README)")
        return 0
    import logging

    from ecd_cli.city import run_city

    logging.getLogger("ecd").setLevel(logging.WARNING)  # the services run in this process: keep their log out of the tables

    print("\n== 3. the schedulers in the loop (mutual TLS): 3 edge nodes, 6 devices on Foursquare NYC traces ==", flush=True)
    city = run_city(args.checkins)
    print_city(city)
    return 0 if all(r.errors == 0 for r in city.reports) else 1


def serve_until_stopped(pages: Serving) -> None:
    """Print the pages' addresses and keep the system up until Ctrl-C or SIGTERM."""
    import signal
    import threading

    _print_table(pages.reports, sys.stdout)
    print("\nthe system stays up (--serve); open in a browser on this machine:", flush=True)
    print(f"  device control panel: {pages.device_panel}  (a device agent streaming held-out images at 10 frames/s)")
    print(f"  operator view:        {pages.operator_view}")
    print(f"  metrics:              {pages.cloud_metrics} (cloud), {pages.edge_metrics} (edge)")
    print("Ctrl-C stops it.", flush=True)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    print("stopping", flush=True)


def print_city(city, out=sys.stdout) -> None:
    p, c, names, edges = city.placement, city.campaign, city.names, city.edge_names
    print(f"placement v{p.version} by {p.method} ({p.trigger}): total cost {p.total_cost:.2f} = activation "
          f"{p.activation_cost:.2f} + service {p.service_cost:.2f} (km of round trips), solved in {p.seconds * 1e3:.0f} ms", file=out)
    by_edge: dict[str, list[str]] = {}
    for d in p.devices:
        by_edge.setdefault(d.edge_id, []).append(names.get(d.device_id, d.device_id))
    print_table(["edge", "position", "active", "devices"],
                [[edges.get(e.edge_id, e.edge_id), f"{e.position.lat:.4f},{e.position.lon:.4f}" if e.position else "-",
                  "yes" if e.active else "no", ", ".join(sorted(by_edge.get(e.edge_id, []))) or "-"] for e in p.edges], out)
    s = c.spec
    print(f"\ncampaign {s.name!r}: TAPP, theta {s.theta:g}, {s.grid.rows}x{s.grid.cols} cells x {s.slots} slots x "
          f"{s.reporters[0]} reporters = {c.requested_work} tasks; allocated {c.allocated_work} to {c.chosen} of "
          f"{c.participants} devices, {c.dangerous} dangerous, in {c.seconds * 1e3:.1f} ms; {c.results} answered, {c.status}",
          file=out)
    quality = {q.device_id: q for q in c.quality}
    rows = []
    for a in c.allocation:
        q = quality.get(a.device_id)
        rows.append([names.get(a.device_id, a.device_id), len(a.tasks), f"{a.disclosure:.3f}",
                     "-" if q is None else f"{q.quality:.3f}", "-" if q is None else q.outliers,
                     f"{city.reputations.get(a.device_id, 0):.3f}",
                     "below floor" if city.reputations.get(a.device_id, 0) < city.floor else ""])
    print_table(["device", "tasks", "KL disclosure", "mean quality", "outliers", "reputation", ""], rows, out)
    left_out = [names.get(d, d) for d in city.second.excluded]
    print(f"\nnext campaign {city.second.spec.name!r}: {city.second.chosen} devices chosen; left out for reputation "
          f"below {city.floor:g}: {', '.join(left_out) or 'none'}", file=out)
    print_table(["device", "frames", "errors", "accuracy", "edges that served it", "moves"],
                [[r.name, r.frames, r.errors, "-" if r.accuracy is None else f"{r.accuracy:.3f}",
                  ", ".join(edges.get(e, e) for e in r.edges), r.moves] for r in city.reports], out)


def print_run(run: DemoRun, out=sys.stdout, table: bool = True) -> None:
    print(f"cloud server :{run.cloud_port} (metrics :{run.cloud_metrics_port}), edge node :{run.edge_port} "
          f"(metrics :{run.edge_metrics_port}); {len(run.reports)} device agents x {run.frames} held-out images", file=out)
    if table:
        _print_table(run.reports, out)
    print(f"\nmetrics scraped: edge answered {run.edge_ok:.0f} frames ok, cloud {run.cloud_ok:.0f}; "
          f"shutdown on SIGTERM: {', '.join(f'{n} exit {c}' for n, c in run.exit_codes.items())}; "
          f"{run.elapsed_s:.1f} s in all", file=out)


def _print_table(reports: list[tuple[DemoDevice, dict]], out) -> None:
    rows = []
    for dev, r in reports:
        n = max(r["frames"] - r["errors"], 1)
        rows.append([
            r["name"], f"{dev.profile}/{dev.radio}", f"{r['w_energy']:.1f}/{r['w_privacy']:.1f}", r["min_split"],
            f"{r['split_device']}/{r['split_edge']}", r["encoding"], r["frames"], r["errors"],
            f"{r['uplink_bytes'] / n:.0f}", f"{r['raw_image_bytes'] / n:.0f}", f"{r['uplink_bytes'] / max(r['raw_image_bytes'], 1):.3f}",
            f"{r['latency_p50_s'] * 1e3:.1f}", f"{r['latency_p95_s'] * 1e3:.1f}",
            "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}",
        ])
    print_table(
        ["device", "profile/radio", "w_e/w_p", "floor", "b_d/b_e", "encoding", "frames", "errors",
         "uplink B/frame", "raw B/frame", "ratio", "p50 ms", "p95 ms", "accuracy"],
        rows, out,
    )


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="cloud server, edge node and three device agents on loopback (the main job)")
    demo.add_argument("--frames", type=int, default=200, help="held-out images each device streams (default 200)")
    demo.add_argument("--serve", action="store_true",
                      help="after part 2, keep the system up with one more device agent and print the control panel's and "
                           "the operator view's addresses, until Ctrl-C (part 3 is not run)")
    demo.add_argument("--checkins", help="Foursquare NYC check-in CSV for part 3, the schedulers on real traces (see the README)")
    demo.set_defaults(func=cmd_demo)
