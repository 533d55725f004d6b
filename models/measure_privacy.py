"""``ecd models privacy``: run both attacks at every split of a built model and store the curve.

Evaluation images are real and never seen by the attacker: for the bundled digits model, its
held-out split (the attacker's decoder trains on the training split); for the ImageNet-shaped
models, crops of scikit-image's bundled photos, with disjoint photos for evaluation and attacker.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ecd.errors import EcdError, IntegrityError
from ecd.manifest import Manifest, sha256_bytes
from ecd.partition import Partition
from ecd.splitcheck import relative_max_abs_diff
from models.definition import ModelDefinition, define_model
from models.privacy import AttackImages, AttackSettings, SplitReconstruction, measure_curve, privacy_record

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
    if manifest.model_id == "digits_cnn":
        from models.digits_cnn import load_digits_split

        data = load_digits_split()
        evaluation = data.test_images[:n_images].astype(np.float32)[:, None] / 255.0
        attacker = data.train_images.astype(np.float32)[:, None] / 255.0
        source = "digits held-out split (evaluation); training split (attacker)"
        images = AttackImages(
            torch.from_numpy(evaluation),
            torch.from_numpy(attacker),
            data.test_labels[:n_images],
            data.train_labels,
        )
        return images, source
    else:
        rng = np.random.default_rng(seed)
        size = manifest.input.shape[-1]
        per_photo = -(-n_images // len(EVALUATION_PHOTOS))
        evaluation = _photo_crops(EVALUATION_PHOTOS, size, per_photo, rng)[:n_images]
        attacker = _photo_crops(ATTACKER_PHOTOS, size, max(per_photo, 16), rng)
        source = (f"scikit-image photo crops: {', '.join(EVALUATION_PHOTOS)} (evaluation); "
                  f"{', '.join(ATTACKER_PHOTOS)} (attacker)")
    return AttackImages(torch.from_numpy(evaluation), torch.from_numpy(attacker)), source


def measure_privacy(
    manifest: Manifest,
    settings: AttackSettings,
    progress: Callable[[int], None] | None = None,
) -> tuple[Manifest, list[SplitReconstruction], AttackImages]:
    """Measure the curve and write it into the manifest in place; returns the updated manifest."""
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    definition = torch_model_for(manifest)
    images, source = attack_images(manifest, settings.n_images, settings.seed)
    results = measure_curve(definition.blocks, manifest.input, images, settings, progress)
    updated = replace(manifest, privacy=privacy_record(results, settings, images, source))
    updated.write(manifest.directory)
    return updated, results, images


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
