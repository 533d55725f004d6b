"""``ecd split`` (one user's split decision) and ``ecd profile`` (measure this device)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ecd.errors import ConfigError
from ecd_cli.fmt import block_table, print_table


def cmd_profile(args: argparse.Namespace) -> int:
    from ecd import zoo
    from ecd.profiles import device_to_toml, load_device, measure_profile

    manifest = zoo.load_manifest(args.model)
    like = load_device(args.like) if args.like else None
    active = args.active_power if args.active_power is not None else (like.cpu_active_w if like else None)
    idle = args.idle_power if args.idle_power is not None else (like.cpu_idle_w if like else None)
    if active is None or idle is None:
        raise ConfigError("--active-power / --idle-power: give both in watts, or --like PROFILE to take them from a shipped profile")
    profile, latencies = measure_profile(manifest, active, idle, name=args.name or "", runs=args.runs, warmup=args.warmup)
    header = (
        f"Written by `ecd profile --model {manifest.model_id}` ({args.runs} timed runs per block, median, batch 1).\n"
        f"Power: {'from the shipped profile ' + args.like if args.like and args.active_power is None else 'given on the command line'}.\n"
        f"joules_per_mac = active power x measured seconds / MACs over {manifest.model_id}'s blocks."
    )
    out = Path(args.out)
    out.write_text(device_to_toml(profile, header))
    block_table(manifest, latencies)
    total_macs = sum(b.macs for b in manifest.blocks)
    print(f"throughput {total_macs / sum(latencies) / 1e9:.2f} GMAC/s; profile {profile.name!r} written to {out}")
    return 0


def _privacy_weights(args: argparse.Namespace) -> tuple[float, float]:
    w_p = args.w_privacy
    if args.w_energy is not None:
        return args.w_energy, w_p
    if not (0.0 <= w_p <= 1.0):
        raise ConfigError(f"--w-privacy: without --w-energy it must lie in [0, 1], got {w_p}")
    return 1.0 - w_p, w_p


def cmd_split(args: argparse.Namespace) -> int:
    from ecd import zoo
    from ecd.profiles import load_device, load_radio
    from ecd.split import Preferences, decide_split

    manifest = zoo.load_manifest(args.model)
    device = load_device(args.profile)
    radio = load_radio(args.radio)
    w_e, w_p = _privacy_weights(args)
    prefs = Preferences(w_energy=w_e, w_privacy=w_p, min_split=args.min_split,
                        max_accuracy_loss=args.max_accuracy_loss, defence_strength=args.defence_strength)
    decision = decide_split(manifest, device, radio, prefs, encoding=args.encoding, max_split=args.max_split)
    if args.json:
        print(json.dumps(decision.to_dict(), indent=2))
    else:
        print(f"{manifest.model_id}@{manifest.version} on {device.name} over {radio.name}, {args.encoding}; "
              f"w_energy {prefs.w_energy:.3f}, w_privacy {prefs.w_privacy:.3f}, min_split {prefs.min_split}, "
              f"max_accuracy_loss {prefs.max_accuracy_loss:g}; E_comp from {decision.compute_source}; "
              f"P_priv = {decision.privacy_source}")
        rows = []
        for b in range(manifest.n_blocks + 1):
            cand = np.isfinite(decision.utility[b])
            rows.append([
                b, int(decision.bytes_sent[b]), f"{decision.e_comp[b]:.3e}", f"{decision.e_comm[b]:.3e}",
                f"{decision.energy_norm[b]:.3f}", f"{decision.p_priv[b]:.3f}", f"{decision.strength_at(b):g}",
                f"{decision.utility[b]:.4f}" if cand else "(floor)" if b < prefs.min_split else "(max)",
                "<- recommended" if b == decision.recommended else "",
            ])
        print_table(["b", "bytes", "E_comp J", "E_comm J", "E_hat", "P_priv", "strength", "U", ""], rows)
        print(f"recommended split: {decision.recommended} (device runs blocks [0, {decision.recommended})), "
              f"defence strength {decision.recommended_strength:g}")
    if args.plot:
        from research.plots import plot_split_curves

        plot_split_curves(manifest, device, radio, prefs, Path(args.plot), encoding=args.encoding, max_split=args.max_split)
        print(f"plot: {args.plot}", file=sys.stderr if args.json else sys.stdout)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("split", help="the ECD split decision for one user: per-split table and recommendation")
    p.add_argument("--model", default="digits_cnn", help="zoo name or path (default digits_cnn)")
    p.add_argument("--profile", required=True, help="device profile name or file (ecd profile writes one)")
    p.add_argument("--radio", required=True, help="wifi, lte or 5g")
    p.add_argument("--w-privacy", "--privacy-weight", dest="w_privacy", type=float, required=True, help="w_privacy (lambda2); with no --energy-weight, w_energy = 1 - w_privacy")
    p.add_argument("--w-energy", "--energy-weight", dest="w_energy", type=float, help="w_energy (lambda1); weights are normalised to sum 1")
    p.add_argument("--min-split", type=int, default=0, help="hard floor: never send anything from below this block")
    p.add_argument("--max-split", type=int, help="the last split the device may run (default: all blocks)")
    p.add_argument("--encoding", default="float32", help="float32, float16 or int8 (bytes sent)")
    p.add_argument("--max-accuracy-loss", type=float, default=0.02,
                   help="the task accuracy a defence may cost, as a fraction (default 0.02)")
    p.add_argument("--defence-strength", type=float,
                   help="pin one measured defence strength (0 = none); default: the utility picks")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", help="PNG of the curves for several privacy weights")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("profile", help="measure per-block latency here and write a device profile")
    p.add_argument("--model", default="digits_cnn")
    p.add_argument("--out", required=True, help="profile file to write (TOML)")
    p.add_argument("--name", help="profile name (default: host name)")
    p.add_argument("--like", help="take power figures from this shipped profile (e.g. pi4)")
    p.add_argument("--active-power", type=float, help="W with the CPU busy")
    p.add_argument("--idle-power", type=float, help="W idle")
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.set_defaults(func=cmd_profile)
