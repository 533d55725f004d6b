"""``ecd allocate``: run one allocation method (TAPP, coverage-aware, CrowdPower sites) on one instance, offline."""

from __future__ import annotations

import argparse
import json

from ecd.errors import ConfigError


def _source(args: argparse.Namespace, allowed: tuple[str, ...]) -> None:
    """Each problem takes only some of the mutually exclusive sources."""
    for flag in ("instance", "checkins", "random"):
        if getattr(args, flag) is not None and flag not in allowed:
            raise ConfigError(f"--{flag}: not used by {args.problem}; give {' or '.join('--' + a for a in allowed)}")


def cmd_allocate(args: argparse.Namespace) -> int:
    if args.problem == "tapp":
        from scheduling.allocation import allocate
        from scheduling.allocation.io import read_tapp

        _source(args, ("instance", "checkins"))
        if args.checkins:
            from research.tapp_areas import checkin_instance

            inst = checkin_instance(args.checkins, args.area, args.theta, args.distribution)
        else:
            inst = read_tapp(args.instance, theta=args.theta)
        result = allocate(inst, args.method, seed=args.seed)
        summary = f"{result.method}: {result.dangerous} dangerous, {result.allocated} of {inst.n_participants} allocated, utility {result.utility:.3f}"
    elif args.problem == "coverage":
        from scheduling.allocation import allocate
        from scheduling.allocation.coverage import random_instance
        from scheduling.allocation.io import read_coverage

        _source(args, ("instance", "random"))
        if args.random:
            k, n, m = args.random
            inst = random_instance(k, n, m, seed=args.seed, rho=args.rho)
        else:
            inst = read_coverage(args.instance, rho=args.rho)
        result = allocate(inst, args.method, seed=args.seed)
        summary = (f"{result.method}: objective {result.objective:.4f}, latency {result.latency:.3f} s, "
                   f"coverage {result.coverage}/{inst.n_subareas}, scheduled {result.scheduled.tolist()}")
    else:
        from scheduling.quality import choose_site
        from scheduling.quality.io import read_sites

        _source(args, ("instance",))
        area = read_sites(args.instance)
        result = choose_site(area.sites, args.event, args.level, args.budget, area.event_position)
        best = result.best
        summary = f"chosen: {best.site if best else 'none (no site qualifies)'}" + (f", score {best.score:.1f}, group {best.group}" if best else "")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(summary)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    al = sub.add_parser("allocate", help="allocation: TAPP (paper 002), coverage-aware (004), CrowdPower sites (001)")
    al.add_argument("problem", choices=["tapp", "coverage", "sites"])
    src = al.add_mutually_exclusive_group(required=True)
    src.add_argument("--instance", help="an instance file (JSON; formats in scheduling/allocation/io.py and, for sites, scheduling/quality/io.py)")
    src.add_argument("--checkins", help="tapp: the Foursquare NYC check-in CSV (columns tid, lat_lon, date_time, root_type); "
                                        "participants with > 30 check-ins, three areas of 3x3 grids")
    src.add_argument("--random", type=int, nargs=3, metavar=("K", "N", "M"), help="coverage: a random channel draw")
    al.add_argument("--method", help="tapp: tapp (default), baseline1, baseline2, exhaustive; ours: tapp_plus, exact (MILP); "
                                     "coverage: proposed (default), benchmark1..3, brute_force; ours: exact (MILP at any size)")
    al.add_argument("--theta", type=float, default=0.5, help="tapp: privacy threshold (an --instance's own theta wins)")
    al.add_argument("--area", type=int, default=0, help="tapp --checkins: which of the three areas")
    al.add_argument("--distribution", default="com", help="tapp --checkins: com or uni workloads")
    al.add_argument("--rho", type=float, default=0.5, help="coverage: latency weight (an --instance's own rho wins)")
    al.add_argument("--seed", type=int, default=0)
    al.add_argument("--event", default="fire", help="sites: event type")
    al.add_argument("--level", type=float, default=5.0, help="sites: required quality level (0-10)")
    al.add_argument("--budget", type=float, default=10.0, help="sites: budget for a site's group")
    al.add_argument("--json", action="store_true")
    al.set_defaults(func=cmd_allocate)
