"""``ecd placement solve`` and ``ecd allocate``: run one scheduler on one instance."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ecd.errors import ConfigError


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


def _read_json(path: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"--instance: no such file {path}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"--instance: {path} is not valid JSON ({e})") from None


def cmd_allocate(args: argparse.Namespace) -> int:
    import numpy as np

    if args.problem == "tapp":
        from scheduling.allocation import tapp
        from research.tapp_areas import area_instance, load_areas

        if args.checkins:
            areas = load_areas(args.checkins)
            if not 0 <= args.area < len(areas):
                raise ConfigError(f"--area: expected 0..{len(areas) - 1}, got {args.area}")
            inst = area_instance(areas[args.area], args.theta, args.distribution)
        else:
            d = _read_json(args.instance)
            try:
                inst = tapp.TappInstance(np.array(d["profiles"], dtype=float), np.array(d["time_threshold"]),
                                         np.array(d["workload"]), np.asarray(d.get("theta", args.theta), dtype=float))
            except KeyError as e:
                raise ConfigError(f"--instance: missing field {e.args[0]!r}") from None
        result = tapp.allocate(inst, args.method or "tapp")
        summary = f"{result.method}: {result.dangerous} dangerous, {result.allocated} of {inst.n_participants} allocated, utility {result.utility:.3f}"
    elif args.problem == "coverage":
        from scheduling.allocation import coverage

        if args.random:
            k, n, m = args.random
            inst = coverage.random_instance(k, n, m, seed=args.seed, rho=args.rho)
        else:
            d = _read_json(args.instance)
            try:
                inst = coverage.CoverageInstance(np.array(d["sensing_rate"], dtype=float), np.array(d["rate"], dtype=float),
                                                 np.array(d["subarea"]), int(d["n_subareas"]), float(d["task_bits"]),
                                                 float(d.get("rho", args.rho)), float(d.get("eta", 1.0)))
            except KeyError as e:
                raise ConfigError(f"--instance: missing field {e.args[0]!r}") from None
        result = coverage.allocate(inst, args.method or "proposed", seed=args.seed)
        summary = f"{result.method}: objective {result.objective:.4f}, latency {result.latency:.3f} s, coverage {result.coverage}/{inst.n_subareas}, scheduled {result.scheduled.tolist()}"
    else:
        from scheduling.quality import crowdpower

        d = _read_json(args.instance)
        try:
            sites = [crowdpower.Site(s["name"], tuple(s["position"]), [crowdpower.Participant(**p) for p in s.get("participants", [])]) for s in d["sites"]]
            position = tuple(d.get("event_position", (0.0, 0.0)))
        except (KeyError, TypeError) as e:
            raise ConfigError(f"--instance: malformed site list ({e})") from None
        best, scores = crowdpower.select_site(sites, args.event, args.level, args.budget, position)
        result = crowdpower.SiteSelection(best, scores)
        summary = f"chosen: {best.site if best else 'none (no site qualifies)'}" + (f", score {best.score:.1f}, group {best.group}" if best else "")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(summary)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    pl = sub.add_parser("placement", help="edge-server placement (paper 003): OTACS, TTACS, baselines, exact")
    plsub = pl.add_subparsers(dest="placement_command", required=True)
    p = plsub.add_parser("solve", help="solve one instance")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--orlib", help="an OR-Library cap file (read as uncapacitated)")
    src.add_argument("--instance", help="an instance in our JSON format")
    p.add_argument("--method", default="otacs", help="otacs, ttacs, otacs_ls, lf, dis, random, apx2_standin, cmsa_standin, exact, exhaustive")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_placement_solve)

    al = sub.add_parser("allocate", help="allocation: TAPP (paper 002), coverage-aware (004), CrowdPower sites (001)")
    al.add_argument("problem", choices=["tapp", "coverage", "sites"])
    src = al.add_mutually_exclusive_group(required=True)
    src.add_argument("--instance", help="an instance file (JSON)")
    src.add_argument("--checkins", help="tapp: a check-in CSV (participants with > 30 check-ins, 3x3 grids)")
    src.add_argument("--random", type=int, nargs=3, metavar=("K", "N", "M"), help="coverage: a random channel draw")
    al.add_argument("--method", help="tapp|baseline1|baseline2|exhaustive; proposed|benchmark1..3|brute_force")
    al.add_argument("--theta", type=float, default=0.5, help="tapp: privacy threshold")
    al.add_argument("--area", type=int, default=0, help="tapp --checkins: which of the three areas")
    al.add_argument("--distribution", default="com", help="tapp --checkins: com or uni workloads")
    al.add_argument("--rho", type=float, default=0.5, help="coverage: latency weight")
    al.add_argument("--seed", type=int, default=0)
    al.add_argument("--event", default="fire", help="sites: event type")
    al.add_argument("--level", type=float, default=5.0, help="sites: required quality level (0-10)")
    al.add_argument("--budget", type=float, default=10.0, help="sites: budget for a site's group")
    al.add_argument("--json", action="store_true")
    al.set_defaults(func=cmd_allocate)
