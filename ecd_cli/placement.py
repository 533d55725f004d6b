"""``ecd placement solve``: run one placement method (paper 003) on one instance, offline."""

from __future__ import annotations

import argparse
import json


def cmd_placement_solve(args: argparse.Namespace) -> int:
    from scheduling.placement import read_instance, read_orlib, solve

    problem = read_orlib(args.orlib) if args.orlib else read_instance(args.instance)
    placement = solve(problem, args.method, seed=args.seed)
    if args.json:
        print(json.dumps(placement.to_dict(problem), indent=2))
    else:
        print(f"{args.method}: total cost {placement.total_cost:.3f} (facility {placement.facility_cost:.3f}, "
              f"service {placement.service_cost:.3f}); NAMES {placement.names}, avgLBSU {placement.avg_lbsu:.3f}, "
              f"avgLBSD {placement.avg_lbsd:.3f}")
        for j, types in placement.to_dict(problem)["types_per_server"].items():
            print(f"  server {j}: {', '.join(types)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    pl = sub.add_parser("placement", help="edge-server placement (paper 003): OTACS, TTACS, baselines, exact")
    plsub = pl.add_subparsers(dest="placement_command", required=True)
    p = plsub.add_parser("solve", help="solve one instance")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--orlib", help="an OR-Library cap file, any of the UFL collection's formats (read as uncapacitated)")
    src.add_argument("--instance", help="an instance in our JSON format")
    p.add_argument("--method", default="otacs", help="otacs, ttacs (paper 003); lf, dis, random, bbo_pso (its baselines; bbo_pso "
                                                      "reconstructed); apx2_standin, cmsa_standin (labelled stand-ins); otacs_ls (ours); "
                                                      "exact (MILP), exhaustive")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_placement_solve)
