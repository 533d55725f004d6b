"""How fast the ECD split decision is for many users with different profiles and weights.

Times the vectorised ``decide_splits`` for 100,000 users (median of repeats) and, side by side, the
one-user ``decide_split`` loop on a sample, and checks they agree.

    python benchmarks/split_decision.py [--users 100000] [--repeats 5] [--loop-sample 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ecd.profiles import known_devices, known_radios, load_device, load_radio
from ecd.split import Preferences, decide_split, decide_splits
from ecd.zoo import load_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loop-sample", type=int, default=2000)
    args = parser.parse_args()

    manifest = load_manifest(args.model)
    devices = [load_device(n) for n in known_devices()]
    radios = [load_radio(n) for n in known_radios()]
    rng = np.random.default_rng(0)
    u = args.users
    dev, rad = rng.integers(0, len(devices), u), rng.integers(0, len(radios), u)
    w_e, w_p = rng.random(u), rng.random(u)
    floor = rng.integers(0, manifest.n_blocks + 1, u)

    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        chosen = decide_splits(manifest, devices, radios, dev, rad, w_e, w_p, floor)
        times.append(time.perf_counter() - t0)
    t_batch = float(np.median(times))

    k = min(args.loop_sample, u)
    t0 = time.perf_counter()
    looped = [decide_split(manifest, devices[dev[i]], radios[rad[i]], Preferences(w_e[i], w_p[i], int(floor[i]))).recommended for i in range(k)]
    t_loop_per_user = (time.perf_counter() - t0) / k
    assert np.array_equal(chosen[:k], looped), "vectorised and per-user decisions disagree"

    print(f"model {manifest.model_id} ({manifest.n_blocks + 1} candidate splits), {len(devices)} device profiles x {len(radios)} radios")
    print(f"  vectorised, {u:,} users      : {t_batch:.4f} s (median of {args.repeats}) — {u / t_batch:,.0f} users/s")
    print(f"  per-user loop ({k} sampled) : {t_loop_per_user * 1e6:.1f} us/user -> {t_loop_per_user * u:.2f} s for {u:,}")
    print(f"  ratio loop / vectorised     : {t_loop_per_user * u / t_batch:.1f}x")
    print(f"  split histogram             : {np.bincount(chosen, minlength=manifest.n_blocks + 1).tolist()}")


if __name__ == "__main__":
    main()
