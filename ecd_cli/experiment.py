"""``ecd experiment ...`` and ``ecd simulate ecd``: the papers' experiments and simulations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ecd_cli.fmt import print_table


def cmd_experiment_allocation(args: argparse.Namespace) -> int:
    from research import allocation_experiments as experiments

    out = args.out or f"results/{args.experiment_command}"
    if args.experiment_command == "tapp":
        rows = experiments.run_tapp(args.checkins, out)
        for dist in ("com", "uni"):
            print(f"\n{dist}-distribution: dangerous participants (utility) per area, theta {', '.join(str(t) for t in experiments.THETAS + experiments.EXTRA_THETAS)}")
            for m in experiments.TAPP_METHODS:
                for a in sorted({r['area'] for r in rows}):
                    sel = [r for r in rows if r["method"] == m and r["distribution"] == dist and r["area"] == a]
                    print(f"  {m:<9} area {a + 1}: " + " ".join("infeasible" if r["dangerous"] is None else f"{r['dangerous']:3d}({r['utility']:.2f})" for r in sel))
        red = experiments.tapp_reduction([r for r in rows if r["distribution"] == "com"])
        print(f"\nTAPP avoids {red['baseline1']:.1%} of Baseline1's and {red['baseline2']:.1%} of Baseline2's dangerous participants "
              f"for theta in [0.2, 0.4] (com-distribution; the paper reports 76.23%)")
    elif args.experiment_command == "coverage":
        rows = experiments.run_coverage(out, draws=args.draws, seed=args.seed)
        mean, worst, count = experiments.coverage_gap(rows)
        print(f"proposed / brute force over {count} draws: mean {mean:.4f}, max {worst:.4f}")
        for sweep in experiments.COVERAGE_SWEEPS:
            print(f"\nmean objective vs {sweep}")
            key = sweep
            xs = sorted({r[key] for r in rows if r["sweep"] == sweep})
            for m in experiments.COVERAGE_METHODS:
                vals = [np.mean([r["objective"] for r in rows if r["sweep"] == sweep and r["method"] == m and r[key] == x]) for x in xs]
                print(f"  {m:<12} " + " ".join(f"{x}:{v:.4f}" for x, v in zip(xs, vals)))
    else:
        res = experiments.run_crowdpower(out, seed=args.seed)
        print("participant  mean quality  reputation  outlier slots")
        for i in range(8):
            print(f"{i + 1:>11}  {res['quality'][i].mean():12.3f}  {res['reputation'][i]:10.3f}  {int(res['outliers'][i].sum()):13d}")
        for sweep in ("event", "malicious", "level"):
            chosen = {}
            for r in res["sites"]:
                if r["sweep"] == sweep:
                    chosen.setdefault(r["value"], None)
                    if r["chosen"]:
                        chosen[r["value"]] = r["site"]
            print(f"chosen site by {sweep}: " + ", ".join(f"{k}: {v or 'none'}" for k, v in chosen.items()))
    print(f"\nwrote CSV and PNG to {out}")
    return 0


def cmd_experiment_placement(args: argparse.Namespace) -> int:
    from research.placement_experiment import SWEEP_METHODS, mean_table, run

    rows = run(args.data, args.out, seed=args.seed, repeats=args.repeats)
    for sweep in ("types", "servers", "users"):
        values = sorted({r["value"] for r in rows if r["sweep"] == sweep})
        print(f"\nmean total cost (TC) vs {sweep}: {values}")
        for m, ys in mean_table(rows, "TC", sweep, SWEEP_METHODS).items():
            print(f"  {m:<13} " + "  ".join(f"{y:9.1f}" for y in ys))
        for metric in ("avgLBSU", "avgLBSD"):
            t = mean_table(rows, metric, sweep, ("otacs", "ttacs"))
            print(f"  {metric:<8} otacs {' '.join(f'{y:6.2f}' for y in t['otacs'])} | ttacs {' '.join(f'{y:6.2f}' for y in t['ttacs'])}")
    print(f"\nwrote {args.out}/placement.csv and placement_{{types,servers,users}}.png")
    return 0


def cmd_simulate_ecd(args: argparse.Namespace) -> int:
    from ecd import zoo
    from research.ecd_simulation import DATA_SIZES_MB, STRATEGIES, Topology, run_simulation

    manifest = zoo.load_manifest(args.model)
    topology = Topology(seed=args.seed)
    total = len(DATA_SIZES_MB) * len(STRATEGIES)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        print(f"\r[{'#' * (20 * done // total):<20}] {done}/{total} runs", end="", file=sys.stderr, flush=True)

    results = run_simulation(manifest, Path(args.out), topology, progress=tick)
    print(file=sys.stderr)
    largest = max(DATA_SIZES_MB)
    rows = []
    for r in results:
        if r.data_mb == largest:
            shares = {k: v.sum() for k, v in r.load_macs.items()}
            total_macs = sum(shares.values())
            rows.append([r.strategy, f"{r.device_energy_j:.4g}", f"{r.similarity:.3f}", f"{r.efficiency:.4g}",
                         f"{shares['server'] / total_macs:.0%}", f"{shares['edge'] / total_macs:.0%}",
                         f"{shares['device'] / total_macs:.0%}"])
    print(f"{topology.servers} servers, {topology.edge_nodes} edge nodes, {topology.devices} devices; "
          f"{manifest.model_id}; {largest} MB captured per device; seed {args.seed}")
    print_table(["strategy", "device energy J", "similarity", "protection/J", "server MACs", "edge MACs", "device MACs"], rows)
    print(f"wrote ecd_simulation.csv, ecd_load.csv, fig6_energy.png, fig7_privacy.png, fig8_load.png to {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    exp = sub.add_parser("experiment", help="the papers' experiments on real data")
    expsub = exp.add_subparsers(dest="experiment_command", required=True)
    for name, helptext in (("tapp", "paper 002 on Foursquare check-ins: dangerous participants and utility vs theta"),
                           ("coverage", "paper 004: objective vs users, subbands, subareas and rho"),
                           ("crowdpower", "paper 001: data quality, reputation, outliers; site selection sweeps")):
        p = expsub.add_parser(name, help=helptext)
        p.add_argument("--checkins", default="../shared/data/foursquare_nyc/checkins.csv")
        p.add_argument("--out", help="output folder (default results/NAME)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--draws", type=int, default=100, help="coverage: channel draws per sweep point")
        p.set_defaults(func=cmd_experiment_allocation)
    p = expsub.add_parser("placement", help="paper 003's sweeps over data types, servers and users")
    p.add_argument("--data", default="../shared/data/foursquare_nyc/checkins.csv")
    p.add_argument("--out", default="results/placement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="instances per sweep point (seeds seed..seed+repeats-1)")
    p.set_defaults(func=cmd_experiment_placement)

    sim = sub.add_parser("simulate", help="the papers' simulations")
    simsub = sim.add_subparsers(dest="simulate_command", required=True)
    p = simsub.add_parser("ecd", help="paper 000 §V.B: 2 servers, 10 edge nodes, 100 devices, six strategies")
    p.add_argument("--model", default="digits_cnn")
    p.add_argument("--out", default="results/ecd_simulation", help="folder for the CSVs and PNGs")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_simulate_ecd)
