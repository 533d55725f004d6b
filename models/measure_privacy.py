"""``ecd models privacy``: run both attacks at every split of a built model and store the curve.

Evaluation images are real and never seen by the attacker: for the bundled digits model, its
held-out split (the attacker's decoder trains on the training split); for the ImageNet-shaped
models, crops of scikit-image's bundled photos, with disjoint photos for evaluation and attacker.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ecd.errors import EcdError, IntegrityError
from ecd.manifest import Manifest, sha256_bytes
from ecd.partition import Partition
from ecd.splitcheck import relative_max_abs_diff
from models.definition import ModelDefinition, define_model
from models.inversion import AttackSettings, calibrate
from models.privacy import (
    DEFAULT_STRENGTHS,
    AttackImages,
    SplitReconstruction,
    attack_split,
    defended_accuracy,
    leakage,
    measure_curve,
    measure_label_only,
)
from models.privacy_record import LEAKAGE_DEFINITION, defence_record, privacy_record

EVALUATION_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
ATTACKER_PHOTOS = ("cat", "immunohistochemistry", "hubble_deep_field", "retina", "coins", "camera")


def torch_model_for(manifest: Manifest) -> ModelDefinition:
    """The torch model behind a manifest's blocks, from its ``weights.pt``, checked against the ONNX."""
    info = manifest.build.get("torch_state_dict")
    if not info or manifest.directory is None:
        raise EcdError(f"model {manifest.model_id!r} has no torch weights beside its blocks; rebuild it with `ecd models build`")
    path = manifest.directory / info["file"]
    if not path.exists() or sha256_bytes(path.read_bytes()) != info["sha256"]:
        raise IntegrityError(f"weights file {path} is missing or does not match the manifest's sha256")
    definition = define_model(manifest.model_id, weights=path, input_size=manifest.input.shape[-1])
    x = np.random.default_rng(0).standard_normal((2, *manifest.input.shape)).astype(np.float32)
    with torch.no_grad():
        want = definition.full_model.eval()(torch.from_numpy(x)).numpy()
    got = Partition(manifest, 0, manifest.n_blocks).run(x)
    if relative_max_abs_diff(got, want) > 1e-4:
        raise IntegrityError(f"{path} does not reproduce the ONNX blocks of {manifest.model_id}@{manifest.version}")
    return definition


def _photo_crops(names: tuple[str, ...], size: int, per_photo: int, rng: np.random.Generator) -> np.ndarray:
    from skimage import data
    from skimage.color import gray2rgb
    from skimage.transform import resize

    crops = []
    for name in names:
        photo = getattr(data, name)()
        if photo.ndim == 2:
            photo = gray2rgb(photo)
        photo = photo[..., :3]
        h, w = photo.shape[:2]
        for _ in range(per_photo):
            side = int(rng.uniform(0.5, 1.0) * min(h, w))
            y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            crop = resize(photo[y : y + side, x : x + side], (size, size), anti_aliasing=True)
            crops.append(crop.transpose(2, 0, 1))
    return np.stack(crops).astype(np.float32)


def attack_images(manifest: Manifest, n_images: int, seed: int) -> tuple[AttackImages, str]:
    data, source = None, ""
    if manifest.model_id == "digits_cnn":
        from models.digits_cnn import load_digits_split

        data, source = load_digits_split(), "digits held-out split (evaluation); training split (attacker)"
    elif manifest.model_id == "faces_cnn":
        from models.faces_cnn import load_faces_split

        data = load_faces_split()
        source = "lfw_subset held-out split, faces and non-faces (evaluation); training split (attacker)"
    if data is not None:  # a labelled data set of our own: held-out images evaluated, the training split attacks
        evaluation = data.test_images[:n_images].astype(np.float32)[:, None] / 255.0
        attacker = data.train_images.astype(np.float32)[:, None] / 255.0
        images = AttackImages(
            torch.from_numpy(evaluation), torch.from_numpy(attacker), data.test_labels[:n_images], data.train_labels
        )
        return images, source
    rng = np.random.default_rng(seed)
    size = manifest.input.shape[-1]
    per_photo = -(-n_images // len(EVALUATION_PHOTOS))
    evaluation = _photo_crops(EVALUATION_PHOTOS, size, per_photo, rng)[:n_images]
    attacker = _photo_crops(ATTACKER_PHOTOS, size, max(per_photo, 16), rng)
    source = (f"scikit-image photo crops: {', '.join(EVALUATION_PHOTOS)} (evaluation); "
              f"{', '.join(ATTACKER_PHOTOS)} (attacker)")
    return AttackImages(torch.from_numpy(evaluation), torch.from_numpy(attacker)), source


# Per-model attack settings (ours): faces_cnn's attacker holds only 140 images, 3 batches an
# epoch, so its decoder gets 5x the epochs; 300 white-box iterations keep a run on a shared
# 2-core CPU under half an hour.
DEFAULT_SETTINGS = {"faces_cnn": AttackSettings(whitebox_iters=300, decoder_epochs=100)}

FINE_TUNED = {
    "faces_cnn": "yes: every block trained with the noise at a random split and strength (models/faces_cnn.py)",
    "digits_cnn": "no: the bundled digits blocks are kept; the table shows what noise alone costs",
}


@dataclass
class Measurement:
    manifest: Manifest
    results: list[SplitReconstruction]  # the undefended curve (empty when kept from the manifest)
    images: AttackImages
    cells: dict[tuple[float, int], SplitReconstruction]  # (strength, split) -> defended attack


def measure_privacy(
    manifest: Manifest,
    settings: AttackSettings,
    progress: Callable[[int], None] | None = None,
    strengths: tuple[float, ...] | None = DEFAULT_STRENGTHS,
    keep_curve: bool = False,
    cell_progress: Callable[[float, int], None] | None = None,
) -> Measurement:
    """Measure and write into the manifest in place.

    The undefended curve (both attacks at every split) unless ``keep_curve`` (then the manifest's
    measured curve stays, and only the label-only baseline, the leakage and the defence table are
    measured); the label-only baseline; with ``strengths``, the defence table — both adaptive
    attacks and the task accuracy at every (strength, split).
    """
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    definition = torch_model_for(manifest)
    blocks, spec = definition.blocks, manifest.input
    images, source = attack_images(manifest, settings.n_images, settings.seed)
    label_only = measure_label_only(images, blocks, spec)
    if keep_curve:
        if not manifest.privacy or "curve" not in manifest.privacy:
            raise EcdError(f"--keep-curve: model {manifest.model_id!r} has no measured curve to keep")
        record = dict(manifest.privacy)
        results: list[SplitReconstruction] = []
        record["label_only"] = {
            "attack": "learned decoder's MSE optimum from the one-hot task output: the attacker's mean "
            "image of the class the model outputs",
            "ssim": round(label_only.ssim, 4),
            "psnr_db": None if label_only.psnr is None else round(label_only.psnr, 4),
            "identity_match": round(label_only.match, 4),
            "n_evaluation": int(len(images.evaluation)),
        }
        record["label_only_baseline_ssim"] = round(label_only.ssim, 4)
        record["leakage_definition"] = LEAKAGE_DEFINITION
        record["leakage"] = [round(leakage(v, label_only.ssim), 4) for v in record["curve"]]
    else:
        results = measure_curve(blocks, spec, images, settings, progress)
        record = privacy_record(results, settings, images, source, label_only)
    cells: dict[tuple[float, int], SplitReconstruction] = {}
    if strengths:
        if 0.0 not in strengths:
            strengths = (0.0, *strengths)
        strengths = tuple(sorted(set(float(v) for v in strengths)))
        defence = calibrate(blocks, spec, images.attacker)
        pixels, labels = _accuracy_set(manifest)
        base_acc = defended_accuracy(blocks, spec, 0, 0.0, None, pixels, labels, settings.seed)
        for st in strengths:
            for b in range(manifest.n_blocks + 1):
                if st == 0.0 and results:
                    cell = results[b]
                else:
                    cell = attack_split(blocks, spec, b, images, settings, defence, st)
                cell.accuracy = defended_accuracy(blocks, spec, b, st, defence, pixels, labels, settings.seed)
                cells[(st, b)] = cell
                if cell_progress:
                    cell_progress(st, b)
        record["defence"] = defence_record(
            cells, strengths, manifest.n_blocks + 1, defence, settings, label_only, base_acc, len(labels),
            FINE_TUNED.get(manifest.model_id, "no"),
        )
    else:
        record.pop("defence", None)
    updated = replace(manifest, privacy=record)
    updated.write(manifest.directory)
    return Measurement(updated, results, images, cells)


def _accuracy_set(manifest: Manifest) -> tuple[torch.Tensor, np.ndarray]:
    """All the model's held-out images (pixels in [0, 1]) and labels, for task accuracy."""
    from ecd.manifest import load_heldout

    held = load_heldout(manifest)
    images = held.images if held.images.ndim == 4 else held.images[..., None]
    pixels = images.astype(np.float32).transpose(0, 3, 1, 2) * np.float32(manifest.input.pixel_scale)
    return torch.from_numpy(np.ascontiguousarray(pixels)), held.labels


def plot_defence(measurement: Measurement, path: Path) -> None:
    """Leakage beyond the label and identity matching vs strength per split, and the frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = measurement.manifest.privacy["defence"]
    strengths, t = d["strengths"], d["table"]
    n_split = len(t["leakage"][0])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for b in range(n_split):
        axes[0].plot(strengths, [t["leakage"][k][b] for k in range(len(strengths))], "o-", ms=3, label=f"b={b}")
        best = [max(t["whitebox_identity_match"][k][b], t["decoder_identity_match"][k][b]) for k in range(len(strengths))]
        axes[1].plot(strengths, best, "o-", ms=3, label=f"b={b}")
    axes[0].set_xlabel("defence strength")
    axes[0].set_ylabel("leakage beyond the label L")
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=7, ncol=2)
    axes[1].axhline(d["identity_match_chance"], color="grey", ls=":", lw=0.8, label="chance")
    axes[1].axhline(d["identity_match_chance"] + 0.1, color="red", ls=":", lw=0.8, label="chance + 10 pts")
    axes[1].set_xlabel("defence strength")
    axes[1].set_ylabel("identity match (best attack)")
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].legend(fontsize=7)
    for k, st in enumerate(strengths):
        sim = [max(t["whitebox_ssim"][k][b], t["decoder_ssim"][k][b]) for b in range(n_split)]
        acc = [t["accuracy"][k][b] for b in range(n_split)]
        axes[2].scatter(acc, sim, s=14, label=f"strength {st:g}")
    axes[2].axhline(0.3, color="grey", ls=":", lw=0.8)
    axes[2].axhline(d["label_only_ssim"], color="k", ls="--", lw=0.8, label="label-only")
    axes[2].set_xlabel("task accuracy (held-out)")
    axes[2].set_ylabel("max SSIM of both attacks")
    axes[2].legend(fontsize=7)
    fig.suptitle(f"{measurement.manifest.model_id}: Laplace-noise defence, adaptive attacks", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_reconstructions(
    results: list[SplitReconstruction], images: AttackImages, path: Path, model_id: str, n_show: int = 3
) -> None:
    """Originals and both attacks' reconstructions at each split, and the SSIM curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_split = len(results)
    n_show = min(n_show, len(images.evaluation))
    rows = 2 * n_show
    fig = plt.figure(figsize=(1.3 * (n_split + 1), 1.3 * rows + 3.2))
    grid = fig.add_gridspec(rows + 1, n_split + 1, height_ratios=[1] * rows + [2.4])

    def show(ax, img: np.ndarray) -> None:
        ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])

    originals = images.evaluation.numpy()
    for k in range(n_show):
        for j, attack in enumerate(("whitebox", "decoder")):
            row = 2 * k + j
            ax = fig.add_subplot(grid[row, 0])
            show(ax, originals[k])
            ax.set_ylabel("white-box" if attack == "whitebox" else "decoder", fontsize=7)
            if row == 0:
                ax.set_title("original", fontsize=8)
            for r in results:
                ax = fig.add_subplot(grid[row, r.split + 1])
                show(ax, getattr(r, attack)[k])
                if row == 0:
                    ax.set_title(f"b={r.split}", fontsize=8)
    ax = fig.add_subplot(grid[rows, :])
    splits = [r.split for r in results]
    ax.plot(splits, [r.whitebox_ssim for r in results], "o-", label="white-box rMLE")
    ax.plot(splits, [r.decoder_ssim for r in results], "s-", label="learned decoder")
    ax.plot(splits, [r.p_priv for r in results], "k--", lw=1, label="P_priv = max")
    ax.axhline(0.3, color="grey", lw=0.8, ls=":", label="unrecognisable (0.3)")
    ax.set_xlabel("split b (blocks run on the device)")
    ax.set_ylabel("mean SSIM")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(splits)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(f"{model_id}: reconstruction similarity by split", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
