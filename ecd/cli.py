"""The ``ecd`` command line.

Library code raises :class:`~ecd.errors.EcdError`; this entry point prints its message (no
traceback) and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from ecd.errors import EcdError, MissingExtraError
from ecd.manifest import Manifest

EXIT_ERROR = 2  # bad input or environment
EXIT_CHECK_FAILED = 1  # the run worked and found a mismatch

log = logging.getLogger("ecd")


# --- formatting ----------------------------------------------------------------------------------


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def fmt_count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], out=None) -> None:
    out = out or sys.stdout
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for k, row in enumerate(cells):
        print("  ".join(c.rjust(w) if k and c[:1].isdigit() else c.ljust(w) for c, w in zip(row, widths)).rstrip(), file=out)
        if k == 0:
            print("  ".join("-" * w for w in widths), file=out)


def block_table(manifest: Manifest, latencies: Sequence[float] | None = None) -> None:
    headers = ["#", "block", "kind", "input", "output", "out bytes", "MACs", "params"]
    if latencies is not None:
        headers.append("latency ms")
    rows = []
    for b in manifest.blocks:
        row: list[object] = [
            b.index, b.name, b.kind, fmt_shape(b.input_shape), fmt_shape(b.output_shape),
            fmt_bytes(b.output_bytes_float32), fmt_count(b.macs), fmt_count(b.params),
        ]
        if latencies is not None:
            row.append(f"{latencies[b.index] * 1e3:.3f}")
        rows.append(row)
    print_table(headers, rows)


# --- commands ------------------------------------------------------------------------------------


def cmd_models_list(args: argparse.Namespace) -> int:
    from ecd import zoo
    from models.registry import REGISTRY

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
    print(f"privacy curve: {'measured' if manifest.privacy else 'not measured'}")
    block_table(manifest)
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
        return EXIT_CHECK_FAILED
    print(f"all {len(results)} split points match {inputs.reference_name}")
    return 0


def cmd_models_check(args: argparse.Namespace) -> int:
    return run_check(args.name, args.runs, args.samples)


def cmd_demo(args: argparse.Namespace) -> int:
    from ecd.zoo import DEFAULT_MODEL

    return run_check(DEFAULT_MODEL, runs=args.runs, samples=None)


# --- parser --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecd", description="ECD Runtime: split inference for crowdsensing")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the bundled model split at every point and check it")
    demo.add_argument("--runs", type=int, default=20, help="timed runs per block (default 20)")
    demo.set_defaults(func=cmd_demo)

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

    p = msub.add_parser("check", help="per-block timing and the per-split identity check")
    p.add_argument("name", help="zoo name or path to a model folder / manifest.json")
    p.add_argument("--runs", type=int, default=20, help="timed runs per block (default 20)")
    p.add_argument("--samples", type=int, help="how many held-out images (default: all)")
    p.set_defaults(func=cmd_models_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except EcdError as e:
        print(f"ecd: error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
