"""``python -m models.adaptive_privacy --out DIR``: issue 35's table — per split x NoPeek privacy
level, the task accuracy, the adaptive attacks at k = 1, 8, 64 frames, each beside its label-only
baseline, the device energy per frame, and whether the acceptance targets are met.

Writes ``DIR/level_L/`` (each level's model exported per block, ONNX + manifest, as ``ecd models
build`` does: what ``ecd privacy export`` reads), ``DIR/adaptive_privacy.json`` and
``DIR/adaptive_privacy.png``. Trains on CPU in about a minute; the attacks take the rest.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from models.adaptive_attacks import ATTACKS, AttackConfig, Scene, attack_view
from models.definition import export_definition
from models.inversion import prefix
from models.orl_nopeek import LEVELS, SPEC, train_levels
from models.orl_task import GALLERY_SHOTS, gallery_and_probes, task_images

SPLITS = (1, 2, 3, 4, 5, 6)
DEVICE, RADIO = "pi4", "wifi"
THREAT_MODEL = (
    "The edge (or anyone on the link) sees the activation a device sends at its split, for every frame. "
    "It knows the architecture, every level's weights and the defence's code (NoPeek is deterministic: "
    "no per-device secret), holds photos of 20 attacker people, and for re-identification a gallery of "
    f"{GALLERY_SHOTS} other photos of each of the 20 evaluated people. The cloud sees the task output too."
)


class LabelView(nn.Module):
    """What the task output alone shows: the one-hot class the model answers."""

    def __init__(self, full: nn.Module):
        super().__init__()
        self.full = full

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(self.full(x).argmax(1), 2).float()


def device_energy(manifest_dir: Path) -> list[float]:
    """Joules per frame on the device at every split 0..n (compute + radio), ecd.split's model."""
    from ecd.manifest import Manifest
    from ecd.profiles import load_device, load_radio
    from ecd.split import comm_energy, compute_energy

    m = Manifest.load(manifest_dir)
    total = compute_energy(m, load_device(DEVICE)) + comm_energy(m, load_radio(RADIO), raw_image=True)
    return [float(v) for v in total]


def acceptance(cell: dict, label_only: dict, base_accuracy: float, chance_top1: float) -> dict:
    """Issue 35's three targets for one cell: re-id top-1 <= chance + 10 points (every attack, every
    k), decoder SSIM <= label-only + 0.05 (every k), accuracy within 2 points of undefended."""
    worst_reid = max(max(cell[a]["top1"]) for a in ATTACKS)
    worst_ssim = max(cell["ssim"])
    ssim_line = max(label_only["ssim"]) + 0.05
    return {
        "max_reid_top1": round(worst_reid, 4), "reid_met": worst_reid <= chance_top1 + 0.10,
        "max_ssim": round(worst_ssim, 4), "ssim_line": round(ssim_line, 4), "ssim_met": worst_ssim <= ssim_line,
        "accuracy_drop": round(base_accuracy - cell["accuracy"], 4), "accuracy_met": base_accuracy - cell["accuracy"] <= 0.02,
    }


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def measure(out: Path, *, levels: tuple[float, ...] = LEVELS, splits: tuple[int, ...] = SPLITS, epochs: int = 40,
            cfg: AttackConfig | None = None, seed: int = 0, log=print) -> dict:
    """Train every level, export it under ``out``, attack every (split, level); the table."""
    cfg = cfg or AttackConfig()
    out.mkdir(parents=True, exist_ok=True)
    attacker, evaluated = task_images("attacker", seed), task_images("evaluated", seed)
    gallery, probes = gallery_and_probes(evaluated)
    scene = Scene(attacker.faces(), gallery, probes)
    chance = {"top1": 1 / len(scene.people), "top5": min(5, len(scene.people)) / len(scene.people)}
    models = train_levels(levels, epochs=epochs, seed=seed, train_data=attacker, heldout=evaluated)
    for lm in models:
        export_definition(lm.definition(evaluated), out / f"level_{lm.level}", example=lm.definition(evaluated).example,
                          heldout=(evaluated.images, evaluated.labels), reference_model=lm.model)
    energy = device_energy(out / "level_0")
    base = models[0].accuracy
    label_only, cells = {}, []
    for lm in models:
        blocks = lm.model.blocks()
        start = time.monotonic()
        label_only[lm.level] = attack_view(LabelView(prefix(blocks, SPEC, len(blocks))), scene, cfg)
        for b in splits:
            cell = {"split": b, "level": lm.level, "accuracy": lm.accuracy, "energy_j": energy[b],
                    **attack_view(prefix(blocks, SPEC, b), scene, cfg)}
            cell["acceptance"] = acceptance(cell, label_only[lm.level], base, chance["top1"])
            cells.append(cell)
        log(f"level {lm.level} (alpha {lm.alpha:g}): accuracy {lm.accuracy:.4f}, attacks {time.monotonic() - start:.0f} s")
    table = _rounded({
        "what": "issue 35: NoPeek levels on ORL face / no-face, adaptive attacks per split x level",
        "threat_model": THREAT_MODEL,
        "data": {"attacker_faces": len(scene.attacker.images), "gallery": len(gallery.images),
                 "probes": len(probes.images), "evaluated_people": len(scene.people),
                 "accuracy_set": f"{int(evaluated.labels.sum())} evaluated faces + {int((evaluated.labels == 0).sum())} held-out non-faces"},
        "levels": [{"level": lm.level, "nopeek_alpha": lm.alpha, "accuracy": lm.accuracy} for lm in models],
        "splits": list(splits), "ks": list(cfg.ks), "chance": chance, "attacks": list(ATTACKS),
        "energy": {"device": DEVICE, "radio": RADIO, "joules_per_frame": energy},
        "settings": {"epochs": epochs, "seed": seed, "draws_per_person": cfg.draws_per_person,
                     "captures": cfg.captures, "decoder_epochs": cfg.decoder.decoder_epochs,
                     "matcher_epochs": cfg.matcher_epochs},
        "label_only": {str(k): v for k, v in label_only.items()},
        "cells": cells,
    })
    (out / "adaptive_privacy.json").write_text(json.dumps(table, indent=1) + "\n")
    plot(table, out / "adaptive_privacy.png")
    return table


def plot(table: dict, path: Path) -> None:
    """Worst re-id top-1 and decoder SSIM per split, one line per level, beside the lines to meet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    splits = table["splits"]
    for lv in table["levels"]:
        cells = [c for c in table["cells"] if c["level"] == lv["level"]]
        label = f"level {lv['level']} (alpha {lv['nopeek_alpha']:g})"
        axes[0].plot(splits, [c["acceptance"]["max_reid_top1"] for c in cells], "o-", ms=3, label=label)
        axes[1].plot(splits, [c["acceptance"]["max_ssim"] for c in cells], "o-", ms=3, label=label)
        lo = table["label_only"][str(lv["level"])]
        axes[1].axhline(max(lo["ssim"]), lw=0.6, ls="--", color=axes[1].lines[-1].get_color())
    axes[0].axhline(table["chance"]["top1"], color="grey", ls=":", lw=0.8, label="chance")
    axes[0].axhline(table["chance"]["top1"] + 0.1, color="red", ls=":", lw=0.8, label="chance + 10 pts")
    axes[0].set(xlabel="split b", ylabel="re-id top-1, worst attack and k", ylim=(-0.02, 1.02))
    axes[1].set(xlabel="split b", ylabel="decoder SSIM, worst k (dashed: label-only)")
    axes[2].bar([str(lv["level"]) for lv in table["levels"]], [lv["accuracy"] for lv in table["levels"]])
    axes[2].set(xlabel="privacy level", ylabel="task accuracy (evaluated people)", ylim=(0.5, 1.0))
    axes[0].legend(fontsize=7)
    fig.suptitle("ORL face / no-face: NoPeek levels against adaptive attacks (k = 1, 8, 64 frames)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.adaptive_privacy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the level models, the JSON table and the plot")
    parser.add_argument("--epochs", type=int, default=40, help="training epochs per level")
    parser.add_argument("--decoder-epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the CPU is shared)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = AttackConfig()
    cfg = replace(cfg, decoder=replace(cfg.decoder, decoder_epochs=args.decoder_epochs))
    table = measure(args.out, epochs=args.epochs, cfg=cfg)
    for c in table["cells"]:
        a = c["acceptance"]
        print(f"split {c['split']} level {c['level']}: acc {c['accuracy']:.3f}  worst re-id top-1 {a['max_reid_top1']:.3f}  "
              f"worst SSIM {a['max_ssim']:.3f} (line {a['ssim_line']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
