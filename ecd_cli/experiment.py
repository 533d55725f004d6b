"""``ecd experiment ...`` and ``ecd simulate ecd``: the papers' experiments and simulations.

The experiments live in :mod:`research`; this module parses arguments, runs them and prints the
rows their summary functions return.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ecd_cli.fmt import print_table

CHECKINS_HELP = ("the Foursquare NYC check-in CSV (columns tid, lat_lon ('lat lon'), date_time, root_type), "
                 "e.g. the sample Foursquare_Sample.csv shipped in the PyPI package mat-data; not part of this repository")


def _cell(dangerous: int | None, utility: float | None) -> str:
    return "infeasible" if dangerous is None else f"{dangerous:3d}({utility:.2f})"


def cmd_experiment_allocation(args: argparse.Namespace) -> int:
    from research import allocation_experiments as experiments

    out = args.out or f"results/{args.experiment_command}"
    if args.experiment_command == "tapp":
        rows = experiments.run_tapp(args.checkins, out, exact_limit_s=args.exact_limit)
        table = experiments.tapp_table(rows)
        for dist in dict.fromkeys(r["distribution"] for r in table):
            thetas = next(r["theta"] for r in table if r["distribution"] == dist)
            print(f"\n{dist}-distribution: dangerous participants (utility) per area, theta {', '.join(str(t) for t in thetas)}")
            for r in (r for r in table if r["distribution"] == dist):
                print(f"  {r['method']:<9} area {r['area'] + 1}: " + " ".join(_cell(d, u) for d, u in zip(r["dangerous"], r["utility"])))
        com = [r for r in rows if r["distribution"] == "com"]
        print()
        for method, label in (("tapp", "TAPP (paper)"), ("tapp_plus", "tapp_plus (ours)"), ("exact", "exact (ours)")):
            if any(r["method"] == method for r in com):
                red = experiments.tapp_reduction(com, method=method)
                print(f"{label} avoids {red['baseline1']:.1%} of Baseline1's and {red['baseline2']:.1%} of Baseline2's dangerous "
                      f"participants for theta in [0.2, 0.4] (com-distribution; the paper reports 76.23% for TAPP)")
    elif args.experiment_command == "coverage":
        rows = experiments.run_coverage(out, draws=args.draws, seed=args.seed)
        mean, worst, count = experiments.coverage_gap(rows)
        print(f"proposed / brute force over {count} draws: mean {mean:.4f}, max {worst:.4f}")
        table = experiments.coverage_means(rows)
        for sweep in dict.fromkeys(r["sweep"] for r in table):
            print(f"\nmean objective vs {sweep}")
            for r in (r for r in table if r["sweep"] == sweep):
                print(f"  {r['method']:<12} " + " ".join(f"{x}:{v:.4f}" for x, v in zip(r["x"], r["objective"])))
    else:
        res = experiments.run_crowdpower(out, seed=args.seed)
        print("participant  mean quality  reputation  outlier slots")
        for r in experiments.participant_summary(res):
            print(f"{r['participant']:>11}  {r['mean_quality']:12.3f}  {r['reputation']:10.3f}  {r['outlier_slots']:13d}")
        chosen = experiments.chosen_sites(res["sites"])
        for sweep in dict.fromkeys(r["sweep"] for r in chosen):
            print(f"chosen site by {sweep}: " + ", ".join(f"{r['value']}: {r['site'] or 'none'}" for r in chosen if r["sweep"] == sweep))
    print(f"\nwrote CSV and PNG to {out}")
    return 0


def cmd_experiment_tapp_gap(args: argparse.Namespace) -> int:
    from research.tapp_investigation import VARIANTS, reductions, run

    variants = args.variants.split(",") if args.variants else list(VARIANTS)
    rows = run(args.checkins, args.out, variants=variants, exact_limit_s=args.exact_limit)
    print("variant      method      cells  dangerous  allocated  can be safe  c_max  avoided vs B1  vs B2   (theta 0.2-0.4, mean over areas)")
    for r in reductions(rows):
        print(f"{r['variant']:<12} {r['method']:<10} {r['cells']:>6} {r['dangerous']:10.1f} {r['allocated']:10.1f} {r['can_be_safe']:12.1f}"
              f" {r['c_max']:6.3f} {r['vs_baseline1']:13.1%} {r['vs_baseline2']:6.1%}")
    print(f"\nwrote {args.out}/tapp_gap.csv")
    return 0


def cmd_experiment_placement(args: argparse.Namespace) -> int:
    from research.placement_experiment import run, summary

    rows = run(args.data, args.out, seed=args.seed, repeats=args.repeats)
    for s in summary(rows):
        print(f"\nmean total cost (TC) vs {s['sweep']}: {s['values']}")
        for m, ys in s["TC"].items():
            print(f"  {m:<13} " + "  ".join(f"{y:9.1f}" for y in ys))
        for metric in ("avgLBSU", "avgLBSD"):
            print(f"  {metric:<8} " + " | ".join(f"{m} {' '.join(f'{y:6.2f}' for y in ys)}" for m, ys in s[metric].items()))
    print(f"\nwrote {args.out}/placement.csv and placement_{{types,servers,users}}.png")
    return 0


def cmd_simulate_ecd(args: argparse.Namespace) -> int:
    from ecd import zoo
    from research.ecd_simulation import DATA_SIZES_MB, STRATEGIES, Topology, run_simulation, summary_rows

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
    rows = summary_rows(results)
    print(f"{topology.servers} servers, {topology.edge_nodes} edge nodes, {topology.devices} devices; "
          f"{manifest.model_id}; {rows[0]['data_mb']:g} MB captured per device; seed {args.seed}")
    print_table(["strategy", "device energy J", "similarity", "protection/J", "server MACs", "edge MACs", "device MACs"],
                [[r["strategy"], f"{r['device_energy_j']:.4g}", f"{r['similarity']:.3f}", f"{r['efficiency']:.4g}",
                  f"{r['server_share']:.0%}", f"{r['edge_share']:.0%}", f"{r['device_share']:.0%}"] for r in rows])
    print(f"wrote ecd_simulation.csv, ecd_load.csv, fig6_energy.png, fig7_privacy.png, fig8_load.png to {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    exp = sub.add_parser("experiment", help="the papers' experiments on real data")
    expsub = exp.add_subparsers(dest="experiment_command", required=True)
    for name, helptext in (("tapp", "paper 002 on Foursquare check-ins: dangerous participants and utility vs theta"),
                           ("coverage", "paper 004: objective vs users, subbands, subareas and rho"),
                           ("crowdpower", "paper 001: data quality, reputation, outliers; site selection sweeps")):
        p = expsub.add_parser(name, help=helptext)
        if name == "tapp":
            p.add_argument("--checkins", required=True, help=CHECKINS_HELP)
            p.add_argument("--exact-limit", type=float, default=0.0,
                           help="also the exact optimum (ours), this many seconds per instance (default 0: skip)")
        p.add_argument("--out", help="output folder (default results/NAME)")
        p.add_argument("--seed", type=int, default=0)
        if name == "coverage":
            p.add_argument("--draws", type=int, default=100, help="channel draws per sweep point")
        p.set_defaults(func=cmd_experiment_allocation)
    p = expsub.add_parser("tapp-gap", help="paper 002 on check-ins: why TAPP's reduction differs from the paper's 76%% "
                                           "(data shape, area split, grid, workload; TAPP, baselines, tapp_plus, exact)")
    p.add_argument("--checkins", required=True, help=CHECKINS_HELP)
    p.add_argument("--out", default="results/tapp_gap")
    p.add_argument("--variants", help="comma-separated subset of: base, one_area, grid2, quantile, full_extent, work10, time20, uni")
    p.add_argument("--exact-limit", type=float, default=20.0, help="seconds for the exact optimum per instance (default 20)")
    p.set_defaults(func=cmd_experiment_tapp_gap)
    p = expsub.add_parser("placement", help="paper 003's sweeps over data types, servers and users")
    p.add_argument("--data", "--checkins", dest="data", required=True, help=CHECKINS_HELP)
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
