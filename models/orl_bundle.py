"""``python -m models.orl_bundle RUN_DIR``: ship the NoPeek privacy levels (issue 35) as bundled models.

``python -m models.adaptive_privacy --out RUN_DIR`` trains one ``orl_faces_cnn`` per privacy level,
exports each per block (``RUN_DIR/level_L/``) and measures the adaptive attacks on every (split,
level) (``RUN_DIR/adaptive_privacy.json``). This module turns that run into what the runtime reads:

* ``ecd/artifacts/orl_faces_cnn/``: level 0 (undefended), whose manifest carries the **learned
  defence table** (``privacy.defence``, kind ``learned``): per level, the model id that runs it, and
  per (level, split) the measured leakage beyond the label, the decoder's SSIM, the worst
  re-identification top-1 and the task accuracy, with its sha256 (``ecd.leakage.defence_table``
  refuses a table edited by hand);
* ``ecd/artifacts/orl_faces_cnn_level{1,2,3}/``: each level's blocks, under its own model id, whose
  manifest carries that level's row as its privacy curve. A level is another set of weights for every
  tier, so it is another model: frames name it, edge nodes and the cloud fetch and run it like any
  other (the cloud serves a family's levels with it, ``cloud_server.served.load_models``).

The privacy term of a (level, split) is the same "beyond the label" measure the other bundled models
use (their manifests' ``leakage_definition``), with re-identification in place of identity matching:
``L = max(beyond(S, S_label), beyond(R, R_label))``, ``beyond(v, v0) = clip((v - v0) / (1 - v0), 0, 1)``,
S the decoder's SSIM and R the re-identification top-1, each the worst over the attacks and over
k = 1, 8, 64 averaged frames, ``_label`` the same attacks fed the task output alone (per level). At
split 0 the device sends the photo itself: L = 1 and S = R = 1 by definition (not measured).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from ecd.leakage import defence_digest
from ecd.manifest import MANIFEST_FILENAME

FAMILY = "orl_faces_cnn"
ATTACKS = ("decoder", "matcher", "linear_probe")
REFERENCE = ("Vepakomma, Singh, Gupta, Raskar, NoPeek: information leakage reduction to share activations in "
             "distributed deep learning, ICDMW 2020 (distance correlation between input and activation, trained "
             "with the task); attacks: He, Zhang, Lee, ACSAC 2019 (inverse network) and re-identification against "
             "a gallery of other photos (models/adaptive_attacks.py)")
LEAKAGE_DEFINITION = (
    "L(level, b) = max(beyond(S, S_label), beyond(R, R_label)), beyond(v, v0) = clip((v - v0) / (1 - v0), 0, 1): "
    "S = the decoder's mean SSIM between the probe photos and their reconstructions from the activation at split b, "
    "R = the re-identification top-1 (decoder, matcher and linear probe against a gallery of other photos of the "
    "evaluated people), each the worst over the attacks and over k = 1, 8, 64 averaged frames; S_label, R_label = "
    "the same attacks fed the task output alone, for the same level. Split 0 sends the photo: L = S = R = 1 by "
    "definition (not measured)."
)


def model_id(level: int) -> str:
    """The model id that runs privacy level ``level``: the family's own for level 0."""
    return FAMILY if level == 0 else f"{FAMILY}_level{level}"


def _beyond(value: float, label_only: float) -> float:
    return min(max((value - label_only) / (1.0 - label_only), 0.0), 1.0) if label_only < 1.0 else 0.0


def level_rows(run: dict) -> dict[int, dict[str, list[float]]]:
    """Per level, the measured rows over splits 0..n: ``decoder_ssim``, ``reid_top1``, ``leakage``,
    ``accuracy``, and that level's label-only figures (``label_ssim``, ``label_reid_top1``)."""
    splits = run["splits"]
    n = max(splits)
    if sorted(splits) != list(range(1, n + 1)):
        raise ValueError(f"splits: expected 1..{n} measured, got {splits}")
    rows: dict[int, dict] = {}
    for level in run["levels"]:
        lv = int(level["level"])
        label = run["label_only"][str(lv)]
        s_label = max(label["ssim"])
        r_label = max(max(label[a]["top1"]) for a in ATTACKS)
        cells = {c["split"]: c for c in run["cells"] if c["level"] == lv}
        ssim = [1.0] + [max(cells[b]["ssim"]) for b in range(1, n + 1)]
        reid = [1.0] + [max(max(cells[b][a]["top1"]) for a in ATTACKS) for b in range(1, n + 1)]
        rows[lv] = {
            "decoder_ssim": [round(v, 4) for v in ssim],
            "reid_top1": [round(v, 4) for v in reid],
            "leakage": [round(max(_beyond(s, s_label), _beyond(r, r_label)), 4) for s, r in zip(ssim, reid)],
            "accuracy": [round(float(level["accuracy"]), 4)] * (n + 1),
            "label_ssim": round(s_label, 4),
            "label_reid_top1": round(r_label, 4),
        }
    return rows


def defence_record(run: dict) -> dict:
    """The learned defence table for the family's level-0 manifest, with its sha256."""
    rows = level_rows(run)
    levels = sorted(rows)
    record = {
        "kind": "learned",
        "reference": REFERENCE,
        "defence": "NoPeek levels: one model per level, trained with the task; deterministic (same input, same "
                   "activation: nothing for an attacker to average away but poses)",
        "strengths": [float(lv) for lv in levels],
        "models": [model_id(lv) for lv in levels],
        "nopeek_alpha": [float(lv_["nopeek_alpha"]) for lv_ in run["levels"]],
        "baseline_accuracy": rows[0]["accuracy"][0],
        "chance_top1": run["chance"]["top1"],
        "label_only": {"decoder_ssim": [rows[lv]["label_ssim"] for lv in levels],
                       "reid_top1": [rows[lv]["label_reid_top1"] for lv in levels]},
        "threat_model": run["threat_model"],
        "leakage_definition": LEAKAGE_DEFINITION,
        "measured_by": "python -m models.adaptive_privacy --out RUN_DIR; python -m models.orl_bundle RUN_DIR",
        "table": {key: [rows[lv][key] for lv in levels] for key in ("leakage", "accuracy", "decoder_ssim", "reid_top1")},
    }
    record["sha256"] = defence_digest(record)
    return record


def privacy_section(run: dict, level: int) -> dict:
    """One level's manifest ``privacy``: its measured row as the curve, and (level 0) the table."""
    row = level_rows(run)[level]
    section = {
        "metric": "ssim",
        "definition": "curve: S(b) = the decoder's mean SSIM, worst over k = 1, 8, 64 averaged frames, at this "
                      "privacy level; the split decision uses the leakage beyond the label (see 'leakage')",
        "curve": row["decoder_ssim"],
        "leakage": row["leakage"],
        "leakage_definition": LEAKAGE_DEFINITION,
        "reference": REFERENCE,
        "privacy_level": {"family": FAMILY, "level": level, "reid_top1": row["reid_top1"],
                          "label_ssim": row["label_ssim"], "label_reid_top1": row["label_reid_top1"],
                          "chance_top1": run["chance"]["top1"]},
    }
    if level == 0:
        section["defence"] = defence_record(run)
    return section


def bundle(run_dir: Path, dest: Path) -> list[Path]:
    """Write every level of ``run_dir`` under ``dest`` (``ecd/artifacts``), one folder per model id."""
    run = json.loads((run_dir / "adaptive_privacy.json").read_text())
    written = []
    for level in sorted(level_rows(run)):
        src, out = run_dir / f"level_{level}", dest / model_id(level)
        manifest = json.loads((src / MANIFEST_FILENAME).read_text())
        if manifest["training"].get("privacy_level") != level:
            raise ValueError(f"{src}: its manifest is not privacy level {level}")
        manifest["model_id"] = model_id(level)
        manifest["privacy"] = privacy_section(run, level)
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for f in sorted(src.iterdir()):
            if f.name != MANIFEST_FILENAME:
                shutil.copy2(f, out / f.name)
        (out / MANIFEST_FILENAME).write_text(json.dumps(manifest, indent=1) + "\n")
        written.append(out)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.orl_bundle", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="the --out folder of python -m models.adaptive_privacy")
    p.add_argument("--dest", type=Path, default=Path(__file__).resolve().parents[1] / "ecd" / "artifacts")
    args = p.parse_args(argv)
    for out in bundle(args.run_dir, args.dest):
        print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
