"""Measured privacy: model-inversion attacks on the activation at every split point.

ECD's privacy term P_priv(b) (paper 000, §IV and Fig. 4(b)) is the similarity between a raw input
and what an attacker reconstructs from the tensor a device sends at split b. The paper assumes a
curve; we measure it with two attacks from He, Zhang and Lee, "Model inversion attacks against
collaborative inference", ACSAC 2019:

1. **White-box** (their regularised maximum likelihood, rMLE, §4): knowing the weights, start from
   noise and minimise ``‖f_{<b}(x̂) − z‖² / ‖z‖² + λ·TV(x̂)`` by Adam over the pixels.
2. **Learned decoder** (their black-box inverse network, §5): the attacker trains a decoder from
   activations to images on *its own* images (here the model's training split, disjoint from the
   evaluation images), then decodes the observed activations.

P_priv(b) = the larger of the two attacks' mean SSIM (clipped to [0, 1]) over the evaluation images;
PSNR is kept beside it. Both attacks' numbers and their settings go into the manifest.

Choices the paper leaves open (ours):

* pixels are parametrised as ``sigmoid(u)`` so the white-box image stays in the valid range, and the
  feature loss is normalised by ``‖z‖²`` so one learning rate fits every depth;
* TV is the anisotropic L1 total variation, weighted by ``tv_weight``;
* the decoder is a generic upsampling CNN (3x3 convs, bilinear x2 steps) sized from the activation
  shape — He et al. tune one per split; ours is one recipe for every split and model;
* at b = 0 the attacker holds the raw input, so both "reconstructions" are the input itself.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ecd.manifest import InputSpec
from models.export import Block

UNRECOGNISABLE_SSIM = 0.3  # He et al.'s line below which a reconstruction is unrecognisable


@dataclass(frozen=True)
class AttackSettings:
    n_images: int = 64  # evaluation images (held out from training and from the attacker)
    whitebox_iters: int = 1000
    whitebox_lr: float = 0.05
    tv_weight: float = 0.01
    decoder_epochs: int = 20
    decoder_lr: float = 2e-3
    decoder_batch: int = 64
    decoder_width: int = 32  # channels of the decoder's conv layers
    seed: int = 0


QUICK = AttackSettings(n_images=8, whitebox_iters=30, decoder_epochs=1, decoder_width=8)


# --- similarity ----------------------------------------------------------------------------------


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two images in [0, 1], ``C x H x W``, clipped to [0, 1] (scikit-image)."""
    from skimage.metrics import structural_similarity

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape[0] == 1:
        value = structural_similarity(a[0], b[0], data_range=1.0)
    else:
        value = structural_similarity(a, b, data_range=1.0, channel_axis=0)
    return float(min(max(value, 0.0), 1.0))


def psnr(a: np.ndarray, b: np.ndarray) -> float | None:
    """PSNR in dB of two images in [0, 1]; None for identical images (infinite)."""
    from skimage.metrics import peak_signal_noise_ratio

    if np.array_equal(a, b):
        return None
    return float(peak_signal_noise_ratio(np.asarray(a, np.float64), np.asarray(b, np.float64), data_range=1.0))


# --- the model as the attacker sees it ------------------------------------------------------------


class Normalise(nn.Module):
    """Pixels in [0, 1] -> the model's input, as ``InputSpec.preprocess`` does."""

    def __init__(self, spec: InputSpec):
        super().__init__()
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def prefix(blocks: Sequence[Block], spec: InputSpec, split: int) -> nn.Module:
    """f_{<b}: pixels in [0, 1] -> the activation sent at split ``split``."""
    module = nn.Sequential(Normalise(spec), *[b.module for b in blocks[:split]]).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


# --- attack 1: white-box regularised maximum likelihood --------------------------------------------


def whitebox_attack(f: nn.Module, z: torch.Tensor, image_shape: Sequence[int], s: AttackSettings) -> torch.Tensor:
    """Reconstruct pixels from activations ``z`` by optimising from noise (He et al. §4, rMLE)."""
    gen = torch.Generator().manual_seed(s.seed)
    u = (0.5 * torch.randn((len(z), *image_shape), generator=gen)).requires_grad_(True)
    opt = torch.optim.Adam([u], lr=s.whitebox_lr)
    dims = tuple(range(1, z.ndim))
    z_norm = z.pow(2).sum(dims).clamp_min(1e-12)
    for _ in range(s.whitebox_iters):
        opt.zero_grad()
        x = torch.sigmoid(u)
        feature = ((f(x) - z).pow(2).sum(dims) / z_norm).mean()
        loss = feature + s.tv_weight * total_variation(x)
        loss.backward()
        opt.step()
    return torch.sigmoid(u).detach()


# --- attack 2: learned decoder (inverse network) --------------------------------------------------


def make_decoder(activation_shape: Sequence[int], image_shape: Sequence[int], width: int) -> nn.Module:
    """A generic upsampling CNN from an activation to an image in [0, 1]."""
    channels, height, wid = image_shape
    layers: list[nn.Module] = []
    if len(activation_shape) == 1:
        h0 = max(height // 8, 1)
        w0 = max(wid // 8, 1)
        layers += [
            nn.Linear(activation_shape[0], width * h0 * w0),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, (width, h0, w0)),
        ]
        h = h0
    else:
        c, h, _ = activation_shape
        layers += [nn.BatchNorm2d(c), nn.Conv2d(c, width, 3, padding=1), nn.ReLU(inplace=True)]
    while h * 2 <= height:
        layers += [
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
        ]
        h *= 2
    layers += [
        nn.Upsample(size=(height, wid), mode="bilinear", align_corners=False),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(width, channels, 3, padding=1),
        nn.Sigmoid(),
    ]
    return nn.Sequential(*layers)


def decoder_attack(
    f: nn.Module,
    attacker_images: torch.Tensor,
    z: torch.Tensor,
    s: AttackSettings,
) -> torch.Tensor:
    """Train an inverse network on the attacker's own images, then decode ``z`` (He et al. §5)."""
    torch.manual_seed(s.seed)
    with torch.no_grad():
        train_z = torch.cat([f(attacker_images[i : i + 256]) for i in range(0, len(attacker_images), 256)])
    decoder = make_decoder(tuple(z.shape[1:]), tuple(attacker_images.shape[1:]), s.decoder_width)
    opt = torch.optim.Adam(decoder.parameters(), lr=s.decoder_lr)
    gen = torch.Generator().manual_seed(s.seed)
    decoder.train()
    for _ in range(s.decoder_epochs):
        order = torch.randperm(len(train_z), generator=gen)
        for start in range(0, len(order), s.decoder_batch):
            idx = order[start : start + s.decoder_batch]
            if len(idx) < 2:
                continue  # BatchNorm needs two samples
            opt.zero_grad()
            nn.functional.mse_loss(decoder(train_z[idx]), attacker_images[idx]).backward()
            opt.step()
    decoder.eval()
    with torch.no_grad():
        return decoder(z)


# --- the curve ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttackImages:
    """Pixels in [0, 1], ``N x C x H x W``: what is evaluated, and what the attacker trains on."""

    evaluation: torch.Tensor
    attacker: torch.Tensor
    evaluation_labels: np.ndarray | None = None  # when the data set is labelled
    attacker_labels: np.ndarray | None = None


def label_only_baseline(images: AttackImages) -> float | None:
    """Mean SSIM between each evaluation image and the attacker's mean image of its class.

    What an attacker who learns only the label could draw; a reconstruction near this value reveals
    little beyond the class. None without labels.
    """
    if images.evaluation_labels is None or images.attacker_labels is None:
        return None
    attacker = images.attacker.numpy()
    means = {c: attacker[images.attacker_labels == c].mean(axis=0) for c in np.unique(images.attacker_labels)}
    evaluation = images.evaluation.numpy()
    return float(np.mean([ssim(x, means[c]) for x, c in zip(evaluation, images.evaluation_labels)]))


@dataclass
class SplitReconstruction:
    split: int
    whitebox: np.ndarray  # reconstructions, N x C x H x W in [0, 1]
    decoder: np.ndarray
    whitebox_ssim: float
    decoder_ssim: float
    whitebox_psnr: float | None
    decoder_psnr: float | None

    @property
    def p_priv(self) -> float:
        return max(self.whitebox_ssim, self.decoder_ssim)


def _mean_scores(recon: np.ndarray, originals: np.ndarray) -> tuple[float, float | None]:
    ssims = [ssim(r, o) for r, o in zip(recon, originals)]
    psnrs = [psnr(r, o) for r, o in zip(recon, originals)]
    finite = [p for p in psnrs if p is not None]
    return float(np.mean(ssims)), (float(np.mean(finite)) if finite else None)


def attack_split(
    blocks: Sequence[Block], spec: InputSpec, split: int, images: AttackImages, s: AttackSettings
) -> SplitReconstruction:
    originals = images.evaluation.numpy()
    if split == 0:
        wb = dec = originals.copy()  # the raw input is what was sent
    else:
        f = prefix(blocks, spec, split)
        with torch.no_grad():
            z = f(images.evaluation)
        wb = whitebox_attack(f, z, tuple(images.evaluation.shape[1:]), s).numpy()
        dec = decoder_attack(f, images.attacker, z, s).numpy()
    wb_ssim, wb_psnr = _mean_scores(wb, originals)
    dec_ssim, dec_psnr = _mean_scores(dec, originals)
    return SplitReconstruction(split, wb, dec, wb_ssim, dec_ssim, wb_psnr, dec_psnr)


def measure_curve(
    blocks: Sequence[Block],
    spec: InputSpec,
    images: AttackImages,
    s: AttackSettings,
    progress: Callable[[int], None] | None = None,
) -> list[SplitReconstruction]:
    """Both attacks at every split 0..n; ``progress(split)`` after each."""
    results = []
    for b in range(len(blocks) + 1):
        results.append(attack_split(blocks, spec, b, images, s))
        if progress:
            progress(b)
    return results


def first_split_below(curve: Sequence[float], line: float = UNRECOGNISABLE_SSIM) -> int | None:
    return next((b for b, v in enumerate(curve) if v < line), None)


def privacy_record(results: Sequence[SplitReconstruction], s: AttackSettings, images: AttackImages, source: str) -> dict:
    """The manifest's ``privacy`` field."""
    curve = [round(r.p_priv, 4) for r in results]
    baseline = label_only_baseline(images)

    def rnd(v: float | None) -> float | None:
        return None if v is None else round(v, 4)

    return {
        "metric": "ssim",
        "definition": "P_priv(b) = max over attacks of mean SSIM (clipped to [0, 1]) between the "
        "evaluation images and their reconstructions from the activation at split b",
        "curve": curve,
        "attacks": {
            "whitebox_rmle": {
                "ssim": [rnd(r.whitebox_ssim) for r in results],
                "psnr_db": [rnd(r.whitebox_psnr) for r in results],
                "settings": {
                    "iterations": s.whitebox_iters,
                    "learning_rate": s.whitebox_lr,
                    "tv_weight": s.tv_weight,
                    "optimizer": "Adam over sigmoid-parametrised pixels",
                    "seed": s.seed,
                },
            },
            "learned_decoder": {
                "ssim": [rnd(r.decoder_ssim) for r in results],
                "psnr_db": [rnd(r.decoder_psnr) for r in results],
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
        "reference": "He, Zhang, Lee, Model inversion attacks against collaborative inference, ACSAC 2019",
    }


def non_monotone_excess(curve: Sequence[float]) -> float:
    """The largest rise of the curve above its running minimum (0 for a non-increasing curve)."""
    low, worst = math.inf, 0.0
    for v in curve:
        low = min(low, v)
        worst = max(worst, v - low)
    return worst


def with_images(s: AttackSettings, n_images: int) -> AttackSettings:
    return replace(s, n_images=n_images)
