"""The manifest's ``privacy`` field and its ``privacy.defence`` table, as ``models/privacy.py``
measured them: the curve, both attacks' scores and settings, the label-only attacker, the leakage
beyond the label and its definition, and the defence's (strength, split) grid with its digest
(``ecd.leakage`` checks the digest and reads the leakage; the split decision uses it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict

from models.inversion import AttackSettings, Defence
from models.privacy import (
    UNRECOGNISABLE_SSIM,
    AttackImages,
    LabelOnly,
    SplitReconstruction,
    first_split_below,
    label_only_baseline,
    leakage,
)


def rnd(v: float | None, digits: int = 4) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), digits)


def table_digest(table: dict) -> str:
    """sha256 over the defence record's canonical JSON, without its own ``sha256`` (ecd.leakage checks it)."""
    import hashlib
    import json

    body = {k: v for k, v in table.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


LEAKAGE_DEFINITION = (
    "L(b) = max(beyond(S(b), S_label), beyond(M(b), M_label)), beyond(v, v0) = clip((v - v0) / (1 - v0), 0, 1): "
    "S(b) = max over both attacks of mean SSIM (clipped to [0, 1]) between the evaluation images and "
    "their reconstructions from the activation at split b; M(b) = max over both attacks of the "
    "identity-matching accuracy (reconstruction matched to its own original among the N evaluation "
    "images by Pearson correlation); S_label, M_label = the same scores for the label-only attacker "
    "(the attacker's mean image of the class the model outputs). Where M was not measured (a kept "
    "curve), the SSIM term alone"
)


def _scores(results: Sequence[SplitReconstruction], attack: str) -> dict[str, list[float | None]]:
    """One attack's scores at every split (``attack``: the ``SplitReconstruction`` fields' prefix)."""
    return {key: [rnd(getattr(r, f"{attack}_{field}")) for r in results]
            for key, field in (("ssim", "ssim"), ("psnr_db", "psnr"), ("identity_match", "match"))}


def privacy_record(
    results: Sequence[SplitReconstruction],
    s: AttackSettings,
    images: AttackImages,
    source: str,
    label_only: LabelOnly | None = None,
    defence: dict | None = None,
) -> dict:
    """The manifest's ``privacy`` field."""
    curve = [round(r.p_priv, 4) for r in results]
    baseline = label_only.ssim if label_only is not None else label_only_baseline(images)
    record = {
        "metric": "ssim",
        "definition": "curve: S(b) = max over attacks of mean SSIM (clipped to [0, 1]) between the "
        "evaluation images and their reconstructions from the activation at split b; the split "
        "decision uses the leakage beyond the label (see 'leakage')",
        "curve": curve,
        "attacks": {
            "whitebox_rmle": {
                **_scores(results, "whitebox"),
                "settings": {
                    "iterations": s.whitebox_iters,
                    "learning_rate": s.whitebox_lr,
                    "tv_weight": s.tv_weight,
                    "optimizer": "Adam over sigmoid-parametrised pixels",
                    "seed": s.seed,
                },
            },
            "learned_decoder": {
                **_scores(results, "decoder"),
                "settings": {
                    "epochs": s.decoder_epochs,
                    "learning_rate": s.decoder_lr,
                    "batch": s.decoder_batch,
                    "width": s.decoder_width,
                    "attacker_images": int(len(images.attacker)),
                    "seed": s.seed,
                },
            },
        },
        "images": {"n_evaluation": int(len(images.evaluation)), "source": source},
        "settings": asdict(s),
        "label_only_baseline_ssim": None if baseline is None else round(baseline, 4),
        "unrecognisable_ssim": UNRECOGNISABLE_SSIM,
        "first_split_below_unrecognisable": first_split_below(curve),
        "identity_match_chance": round(1.0 / len(images.evaluation), 4),
        "reference": "He, Zhang, Lee, Model inversion attacks against collaborative inference, ACSAC 2019",
    }
    if label_only is not None:
        record["label_only"] = {
            "attack": "learned decoder's MSE optimum from the one-hot task output: the attacker's "
            "mean image of the class the model outputs",
            "ssim": rnd(label_only.ssim),
            "psnr_db": rnd(label_only.psnr),
            "identity_match": rnd(label_only.match),
        }
        record["leakage_definition"] = LEAKAGE_DEFINITION
        record["leakage"] = [
            round(leakage(r.p_priv, label_only.ssim, max(r.whitebox_match, r.decoder_match), label_only.match), 4)
            for r in results
        ]
    if defence is not None:
        record["defence"] = defence
    return record


def defence_record(
    cells: dict[tuple[float, int], SplitReconstruction],
    strengths: Sequence[float],
    n_splits: int,
    defence: Defence,
    s: AttackSettings,
    label_only: LabelOnly,
    baseline_accuracy: float,
    n_accuracy_images: int,
    fine_tuned: str,
) -> dict:
    """The manifest's ``privacy.defence``: every (strength, split) cell, both adaptive attacks."""

    def grid(get) -> list[list[float | None]]:
        return [[rnd(get(cells[(st, b)])) for b in range(n_splits)] for st in strengths]

    table = {
        "whitebox_ssim": grid(lambda c: c.whitebox_ssim),
        "decoder_ssim": grid(lambda c: c.decoder_ssim),
        "whitebox_psnr_db": grid(lambda c: c.whitebox_psnr),
        "decoder_psnr_db": grid(lambda c: c.decoder_psnr),
        "whitebox_identity_match": grid(lambda c: c.whitebox_match),
        "decoder_identity_match": grid(lambda c: c.decoder_match),
        "leakage": grid(lambda c: leakage(c.p_priv, label_only.ssim, max(c.whitebox_match, c.decoder_match),
                                          label_only.match)),
        "accuracy": grid(lambda c: c.accuracy),
    }
    record = {
        "kind": "laplace_noise",
        "reference": "Titcombe, Hall, Papadopoulos, Romanini, Practical defences against model "
        "inversion attacks for split neural networks, 2021 (Laplacian noise on the intermediate "
        "tensor, model trained with the noise)",
        "noise": "Laplace(0, strength x scale[b]) added to every element of the activation at split b "
        "on the device, before encoding; scale[b] = mean |activation| over the training images (ours)",
        "fine_tuned": fine_tuned,
        "strengths": [float(v) for v in strengths],
        "scale": [float(v) for v in defence.scale],
        "baseline_accuracy": round(baseline_accuracy, 4),
        "n_accuracy_images": int(n_accuracy_images),
        "accuracy_draws": 5,
        "settings": asdict(s),
        "attacker": "adaptive: the decoder trains on activations defended as the device does (fresh "
        "noise every epoch); the white-box attack maximises the Laplace likelihood (L1 feature loss)",
        "label_only_ssim": rnd(label_only.ssim),
        "label_only_identity_match": rnd(label_only.match),
        "identity_match_chance": round(1.0 / len(label_only.reconstructions), 4),
        "table": table,
    }
    record["sha256"] = table_digest(record)
    return record
