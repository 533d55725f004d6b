"""``ecd demo``: the README's main job — the per-split check, then the three tiers on loopback."""

from __future__ import annotations

import argparse
import sys

from ecd.errors import ConfigError
from ecd.launch import DemoDevice, DemoRun, run_demo
from ecd.zoo import DEFAULT_MODEL
from ecd_cli.fmt import print_table
from ecd_cli.models import EXIT_CHECK_FAILED, run_check


def cmd_demo(args: argparse.Namespace) -> int:
    if args.frames < 1:
        raise ConfigError(f"--frames: expected >= 1, got {args.frames}")
    print("== 1. the bundled model, split at every point in one process ==")
    if run_check(DEFAULT_MODEL, runs=20, samples=None) != 0:
        return EXIT_CHECK_FAILED
    print("\n== 2. three tiers on loopback: cloud server, edge node, device agents ==", flush=True)
    run = run_demo(frames=args.frames)
    print_run(run)
    return 1 if run.failed else 0


def print_run(run: DemoRun, out=sys.stdout) -> None:
    print(f"cloud server :{run.cloud_port} (metrics :{run.cloud_metrics_port}), edge node :{run.edge_port} "
          f"(metrics :{run.edge_metrics_port}); {len(run.reports)} device agents x {run.frames} held-out images", file=out)
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
    demo.set_defaults(func=cmd_demo)
