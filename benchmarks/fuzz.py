"""The longer fuzz run of every RPC (the CI run is tests/integration/test_fuzz.py, 150 cases): drawn
requests against a cloud server and an edge node in their own processes, with the invariants of
tests/fuzzing.py checked after each call. Prints and writes (JSON) the cases tried per status,
the failures found, the services' peak RSS and the run time.

    python benchmarks/fuzz.py [--cases 3000] [--seed 0] [--out results/fuzz.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]  # the project's packages first: tests/ecd (test files) is not the ecd package
sys.path.append(str(REPO / "tests"))
from fuzzing import Tally, check_case, methods, new_cluster, request_strategy  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0, help="hypothesis's seed: the same seed draws the same cases")
    p.add_argument("--out", default="")
    args = p.parse_args()
    cluster, tmp = new_cluster()
    tally, all_methods, templates = Tally(), methods(), cluster.templates()
    per_method: dict[str, int] = {}

    @settings(max_examples=args.cases, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @seed(args.seed)
    @given(data=st.data())
    def one_call(data) -> None:
        method = data.draw(st.sampled_from(all_methods))
        per_method[method.path] = per_method.get(method.path, 0) + 1
        strategy = request_strategy(method, templates)
        n = data.draw(st.integers(1, 3)) if method.client_streaming else 1
        check_case(cluster, tally, method, [data.draw(strategy) for _ in range(n)])

    t0 = time.perf_counter()
    found = ""
    try:
        one_call()
    except AssertionError as e:
        found = str(e)
    finally:
        alive, canary = cluster.alive(), cluster.alive() and cluster.canary()
        rss = cluster.rss_mb() if alive else {}
        cluster.close()
        tmp.cleanup()
    seconds = time.perf_counter() - t0
    for k, v in rss.items():
        tally.peak_rss_mb[k] = max(tally.peak_rss_mb.get(k, 0.0), v)
    print(f"{tally.cases} cases in {seconds:.0f} s over {len(per_method)} of {len(all_methods)} methods; "
          f"statuses: {dict(sorted(tally.by_status.items()))}")
    print(f"failures: {len(tally.failures)}{' — ' + found if found else ''}; services alive after: {alive}, "
          f"canary answered: {canary}; peak RSS MB: { {k: round(v) for k, v in tally.peak_rss_mb.items()} }")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(tally.to_json())
    return 0 if not tally.failures and canary else 1


if __name__ == "__main__":
    sys.exit(main())
