"""``ecd models``: list, build, inspect, measure privacy, check — the model zoo."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ecd_cli.exits import CHECK_FAILED
from ecd.errors import ConfigError, EcdError, MissingExtraError
from ecd_cli.fmt import block_table, fmt_bytes, fmt_shape, print_table


def cmd_models_list(args: argparse.Namespace) -> int:
    from ecd import zoo
    from ecd.zoo import REGISTRY

    rows = []
    for name, entry in sorted(REGISTRY.items()):
        try:
            m = zoo.load_manifest(name)
            state = f"built ({m.version}) in {m.directory}"
        except EcdError:
            state = "not built"
        rows.append([name, "yes" if entry.bundled else "no", state, entry.description])
    print_table(["model", "bundled", "state", "description"], rows)
    return 0


def cmd_models_build(args: argparse.Namespace) -> int:
    from ecd import zoo

    out = Path(args.out) if args.out else zoo.model_dir(args.name)
    try:
        from models.definition import build_model
    except ImportError as e:
        raise MissingExtraError(
            f"building models needs torch ({e.name} is not installed): pip install 'ecd-runtime[models]'"
        ) from None
    manifest, _ = build_model(
        args.name, out, weights=args.weights, seed=args.seed, input_size=args.input_size
    )
    print(f"built {manifest.model_id} version {manifest.version}: {manifest.n_blocks} blocks in {out}")
    if manifest.training and "heldout_accuracy" in manifest.training:
        print(f"held-out accuracy: {manifest.training['heldout_accuracy']:.4f}")
    return 0


def cmd_models_inspect(args: argparse.Namespace) -> int:
    from ecd import zoo

    manifest = zoo.load_manifest(args.name)
    if args.json:
        print(json.dumps(manifest.to_dict(), indent=2))
        return 0
    print(f"{manifest.model_id} version {manifest.version} — {manifest.description}")
    print(f"input: {fmt_shape(manifest.input.shape)} {manifest.input.dtype} {manifest.input.layout}, "
          f"x = (pixel * {manifest.input.pixel_scale:.6g} - mean {list(manifest.input.mean)}) / std "
          f"{list(manifest.input.std)}; {len(manifest.labels)} classes")
    if manifest.training:
        print("training: " + ", ".join(f"{k}={v}" for k, v in manifest.training.items()))
    if manifest.privacy:
        curve = ", ".join(f"{v:.3f}" for v in manifest.privacy["curve"])
        print(f"privacy: attack similarity S(b), b = 0..{manifest.n_blocks}: {curve}")
        if "leakage" in manifest.privacy:
            leak = ", ".join(f"{v:.3f}" for v in manifest.privacy["leakage"])
            print(f"privacy: leakage beyond the label L(b) (the utility's P_priv): {leak}")
        if "defence" in manifest.privacy:
            d = manifest.privacy["defence"]
            print(f"defence: {d.get('kind')} at strengths {d.get('strengths')} (ecd models inspect --json for the table)")
    else:
        print("privacy: not measured (ecd models privacy NAME)")
    block_table(manifest)
    return 0


def _strengths(text: str) -> tuple[float, ...]:
    import math

    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--strengths: expected comma-separated numbers, got {text!r}") from None
    if any(not math.isfinite(v) or v < 0 for v in values):
        raise ConfigError(f"--strengths: every strength must be finite and >= 0, got {text!r}")
    return values


def cmd_models_privacy(args: argparse.Namespace) -> int:
    import time
    from dataclasses import replace

    from ecd import zoo

    manifest = zoo.load_manifest(args.name)
    try:
        from tqdm import tqdm

        from models.measure_privacy import DEFAULT_SETTINGS, measure_privacy, plot_defence, plot_reconstructions
        from models.privacy import DEFAULT_STRENGTHS, QUICK, QUICK_STRENGTHS, AttackSettings
    except ImportError as e:
        raise MissingExtraError(
            f"measuring privacy needs torch ({e.name} is not installed): pip install 'ecd-runtime[models]'"
        ) from None
    settings = QUICK if args.quick else DEFAULT_SETTINGS.get(manifest.model_id, AttackSettings())
    if args.images is not None:
        if args.images < 1:
            raise ConfigError(f"--images: expected >= 1, got {args.images}")
        settings = replace(settings, n_images=args.images)
    for flag, field in (("whitebox_iters", "whitebox_iters"), ("decoder_epochs", "decoder_epochs"),
                        ("decoder_width", "decoder_width")):
        value = getattr(args, flag)
        if value is not None:
            if value < 1:
                raise ConfigError(f"--{flag.replace('_', '-')}: expected >= 1, got {value}")
            settings = replace(settings, **{field: value})
    settings = replace(settings, seed=args.seed)
    if args.no_defence:
        strengths: tuple[float, ...] | None = None
    elif args.strengths is not None:
        strengths = _strengths(args.strengths)
    else:
        strengths = QUICK_STRENGTHS if args.quick else DEFAULT_STRENGTHS
    cells = (len(set(strengths) | {0.0}) - (0 if args.keep_curve else 1)) * (manifest.n_blocks + 1) if strengths else 0
    total = (0 if args.keep_curve else manifest.n_blocks + 1) + cells
    start = time.perf_counter()
    with tqdm(total=total, desc=f"attacks on {manifest.model_id}", unit="cell") as bar:
        m = measure_privacy(
            manifest, settings, progress=lambda b: bar.update(1), strengths=strengths,
            keep_curve=args.keep_curve,
            cell_progress=lambda st, b: bar.update(1) if (st > 0 or args.keep_curve) else None,
        )
    elapsed = time.perf_counter() - start
    updated, results, images = m.manifest, m.results, m.images
    privacy = updated.privacy
    leak = privacy.get("leakage")
    if results:
        rows = [
            [r.split, f"{r.whitebox_ssim:.3f}", f"{r.decoder_ssim:.3f}", f"{r.p_priv:.3f}",
             "-" if leak is None else f"{leak[r.split]:.3f}",
             "-" if r.whitebox_psnr is None else f"{r.whitebox_psnr:.1f}",
             "-" if r.decoder_psnr is None else f"{r.decoder_psnr:.1f}",
             f"{r.whitebox_match:.3f}", f"{r.decoder_match:.3f}"]
            for r in results
        ]
        print_table(["b", "white-box SSIM", "decoder SSIM", "S = max", "leakage L", "white-box PSNR dB",
                     "decoder PSNR dB", "white-box match", "decoder match"], rows)
    elif leak is not None:
        print("kept the measured curve S(b): " + ", ".join(f"{v:.3f}" for v in privacy["curve"]))
        print("leakage beyond the label L(b): " + ", ".join(f"{v:.3f}" for v in leak))
    lo = privacy.get("label_only")
    if lo is not None:
        print(f"label-only attacker (mean attacker image of the output class): SSIM {lo['ssim']:.3f}, "
              f"identity match {lo['identity_match']:.3f} (chance {1 / len(images.evaluation):.3f})")
    d = privacy.get("defence")
    if d is not None:
        t = d["table"]
        rows = []
        for k, st in enumerate(d["strengths"]):
            for b in range(updated.n_blocks + 1):
                rows.append([f"{st:g}", b, f"{t['whitebox_ssim'][k][b]:.3f}", f"{t['decoder_ssim'][k][b]:.3f}",
                             f"{t['leakage'][k][b]:.3f}",
                             f"{t['whitebox_identity_match'][k][b]:.3f}", f"{t['decoder_identity_match'][k][b]:.3f}",
                             "-" if t["decoder_psnr_db"][k][b] is None else f"{t['decoder_psnr_db'][k][b]:.1f}",
                             f"{t['accuracy'][k][b]:.4f}"])
        print(f"defence: Laplace noise, scale = strength x mean|z_b|; adaptive attacks; accuracy on "
              f"{d['n_accuracy_images']} held-out images (undefended {d['baseline_accuracy']:.4f})")
        print_table(["strength", "b", "white-box SSIM", "decoder SSIM", "leakage L", "white-box match",
                     "decoder match", "decoder PSNR dB", "accuracy"], rows)
    below = privacy.get("first_split_below_unrecognisable")
    print("S falls below SSIM 0.3 (unrecognisable) at split "
          + (str(below) if below is not None else "— never, at any split"))
    print(f"{len(images.evaluation)} evaluation images; measured in {elapsed:.1f} s; written to "
          f"{updated.directory / 'manifest.json'}")
    if args.plot:
        if results:
            plot_reconstructions(results, images, Path(args.plot), updated.model_id)
            print(f"picture: {args.plot}")
        if d is not None:
            defence_plot = Path(args.plot).with_name(Path(args.plot).stem + "_defence.png")
            plot_defence(m, defence_plot)
            print(f"defence picture: {defence_plot}")
    return 0


def run_check(name: str, runs: int, samples: int | None) -> int:
    from ecd import zoo
    from ecd.splitcheck import RELATIVE_TOLERANCE, check_inputs, check_splits, time_blocks

    manifest = zoo.load_manifest(name)
    print(f"== {manifest.model_id} version {manifest.version}: {manifest.n_blocks} blocks ==")
    print(f"per-block table (latency: onnxruntime, batch 1, median of {runs} runs on this host)")
    block_table(manifest, time_blocks(manifest, runs=runs))
    inputs = check_inputs(manifest, samples)
    print()
    print(f"per-split check: blocks [0, b) then [b, {manifest.n_blocks}) on {len(inputs.x)} "
          f"{'held-out images' if inputs.labels is not None else 'random inputs'}, "
          f"against {inputs.reference_name} (tolerance {RELATIVE_TOLERANCE:g} relative max-abs)")
    raw = manifest.activation_bytes(0)
    results = check_splits(manifest, inputs)
    rows = []
    for r in results:
        rows.append([
            r.split, fmt_shape(r.activation_shape), fmt_bytes(r.activation_bytes),
            f"{r.activation_bytes / raw:.3f}", f"{r.rel_max_abs_diff:.2e}",
            f"{r.argmax_agreement:.4f}", "-" if r.accuracy is None else f"{r.accuracy:.4f}",
            "ok" if r.ok else "MISMATCH",
        ])
    print_table(["b", "sent tensor", "bytes/sample", "vs raw", "rel diff", "same class", "accuracy", ""], rows)
    failed = [r.split for r in results if not r.ok]
    if failed:
        print(f"FAILED at splits {failed}", file=sys.stderr)
        return CHECK_FAILED
    print(f"all {len(results)} split points match {inputs.reference_name}")
    return 0


def cmd_models_check(args: argparse.Namespace) -> int:
    return run_check(args.name, args.runs, args.samples)


def register(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="the model zoo: list, build, inspect, check")
    msub = models.add_subparsers(dest="models_command", required=True)
    p = msub.add_parser("list", help="known models and where they are built")
    p.set_defaults(func=cmd_models_list)

    p = msub.add_parser("build", help="(re)build a model's ONNX blocks and manifest (needs torch)")
    p.add_argument("name")
    p.add_argument("--out", help="output folder (default: the model's folder in the zoo)")
    p.add_argument("--weights", type=Path, help="a torch state_dict file; default: random (or trained, for digits_cnn)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights / training (default 0)")
    p.add_argument("--input-size", type=int, help="square input side in pixels (default: the model's)")
    p.set_defaults(func=cmd_models_build)

    p = msub.add_parser("inspect", help="print a model's manifest")
    p.add_argument("name", help="zoo name or path to a model folder / manifest.json")
    p.add_argument("--json", action="store_true", help="the manifest as JSON")
    p.set_defaults(func=cmd_models_inspect)

    p = msub.add_parser("privacy", help="measure P_priv(b) with two model-inversion attacks (needs torch)")
    p.add_argument("name", help="zoo name or path to a model folder / manifest.json")
    p.add_argument("--quick", action="store_true", help="small settings (for tests), not for the real curve")
    p.add_argument("--images", type=int, help="evaluation images (default 64; --quick 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", help="write originals, reconstructions and the SSIM curve to this PNG "
                   "(and the defence table to NAME_defence.png)")
    p.add_argument("--strengths", help="defence strengths to measure, comma-separated (default 0,0.5,1,2,4,8; "
                   "--quick 0,2,8)")
    p.add_argument("--no-defence", action="store_true", help="measure the undefended curve only")
    p.add_argument("--keep-curve", action="store_true",
                   help="keep the manifest's measured undefended curve; measure the label-only baseline, "
                   "the leakage and the defence table only")
    p.add_argument("--whitebox-iters", type=int, help="override the white-box iterations")
    p.add_argument("--decoder-epochs", type=int, help="override the decoder's epochs")
    p.add_argument("--decoder-width", type=int, help="override the decoder's width")
    p.set_defaults(func=cmd_models_privacy)

    p = msub.add_parser("check", help="per-block timing and the per-split identity check")
    p.add_argument("name", help="zoo name or path to a model folder / manifest.json")
    p.add_argument("--runs", type=int, default=20, help="timed runs per block (default 20)")
    p.add_argument("--samples", type=int, help="how many held-out images (default: all)")
    p.set_defaults(func=cmd_models_check)
