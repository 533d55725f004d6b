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

The similarity S(b) = the larger of the two attacks' mean SSIM (clipped to [0, 1]) over the
evaluation images (the manifest's ``curve``); PSNR and an identity-matching accuracy (can a
reconstruction be matched to its own original among the N evaluation images?) are kept beside it.

**Leakage beyond the label** (issue 17). The task output (the class) reaches the cloud anyway, so
what the split decides is how much the activation reveals *beyond* it. The label-only attacker is
the learned decoder given only the task output: its MSE optimum from a one-hot class is the mean of
the attacker's images of that class (we use that optimum, computed, rather than a trained
approximation of it), scored with the same metrics, S_label. The privacy term the utility uses is

    L(b) = max(beyond(S(b), S_label), beyond(M(b), M_label)),  beyond(v, v0) = clip((v - v0) / (1 - v0), 0, 1)

with M the identity-matching accuracy (best of both attacks), so L = 1 for the raw input and 0 for
"no more than the class". SSIM alone misses identity: a blurry reconstruction can score no better
than the class mean and still pick the right person out of N, so the matching term is kept beside
it. Dividing by ``1 - baseline`` keeps the term on [0, 1] like Ê (our choices).

The attacks, the defence and the choices the paper leaves open in them are ``models/inversion.py``'s;
the manifest's record of a measurement, ``models/privacy_record.py``'s. Ours here:

* at b = 0 the attacker holds the raw input, so both "reconstructions" are the input itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from ecd.manifest import InputSpec
from torch import nn

from models.export import Block
from models.inversion import (
    AttackSettings,
    Defence,
    decoder_attack,
    prefix,
    whitebox_attack,
)

UNRECOGNISABLE_SSIM = 0.3  # He et al.'s line below which a reconstruction is unrecognisable

QUICK = AttackSettings(n_images=8, whitebox_iters=30, decoder_epochs=1, decoder_width=8)
DEFAULT_STRENGTHS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
QUICK_STRENGTHS = (0.0, 2.0, 8.0)


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


def identity_match(recon: np.ndarray, originals: np.ndarray) -> float:
    """Fraction of reconstructions whose most correlated original (Pearson, over pixels) among
    the N evaluation images is their own; chance is 1/N. Needs no identity labels."""
    r = recon.reshape(len(recon), -1).astype(np.float64)
    o = originals.reshape(len(originals), -1).astype(np.float64)
    r = r - r.mean(1, keepdims=True)
    o = o - o.mean(1, keepdims=True)
    r /= np.linalg.norm(r, axis=1, keepdims=True).clip(1e-12)
    o /= np.linalg.norm(o, axis=1, keepdims=True).clip(1e-12)
    return float(np.mean(np.argmax(r @ o.T, axis=1) == np.arange(len(r))))


# --- the curve ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttackImages:
    """Pixels in [0, 1], ``N x C x H x W``: what is evaluated, and what the attacker trains on."""

    evaluation: torch.Tensor
    attacker: torch.Tensor
    evaluation_labels: np.ndarray | None = None  # when the data set is labelled
    attacker_labels: np.ndarray | None = None


def label_only_reconstructions(images: AttackImages, blocks: Sequence[Block] | None = None,
                               spec: InputSpec | None = None) -> np.ndarray | None:
    """What the label-only attacker draws for each evaluation image: the mean of the attacker's
    images of the class the model outputs (the MSE-optimal decoder from a one-hot task output).

    With ``blocks`` the classes are the model's predictions (what the cloud answers); without, the
    data set's labels. None when neither is available.
    """
    if blocks is not None and spec is not None:
        full = prefix(blocks, spec, len(blocks))
        with torch.no_grad():
            ev = full(images.evaluation).argmax(1).numpy()
            at = torch.cat([full(images.attacker[i : i + 256]) for i in range(0, len(images.attacker), 256)]).argmax(1).numpy()
    elif images.evaluation_labels is not None and images.attacker_labels is not None:
        ev, at = images.evaluation_labels, images.attacker_labels
    else:
        return None
    attacker = images.attacker.numpy()
    overall = attacker.mean(axis=0)
    means = {c: (attacker[at == c].mean(axis=0) if (at == c).any() else overall) for c in np.unique(ev)}
    return np.stack([means[c] for c in ev]).astype(np.float32)


def label_only_baseline(images: AttackImages) -> float | None:
    """Mean SSIM between each evaluation image and the attacker's mean image of its (true) class."""
    recon = label_only_reconstructions(images)
    if recon is None:
        return None
    return float(np.mean([ssim(x, r) for x, r in zip(images.evaluation.numpy(), recon)]))


def _beyond(value: float, baseline: float) -> float:
    if baseline >= 1.0:
        return 0.0
    return float(min(max((value - baseline) / (1.0 - baseline), 0.0), 1.0))


def leakage(similarity: float, label_only: float, match: float | None = None,
            label_only_match: float | None = None) -> float:
    """What the activation reveals beyond the label, on [0, 1] (1 = the raw input): the larger of
    the SSIM and the identity-matching accuracy above the label-only attacker's, each rescaled."""
    value = _beyond(similarity, label_only)
    if match is not None and label_only_match is not None and not math.isnan(match):
        value = max(value, _beyond(match, label_only_match))
    return value


@dataclass
class SplitReconstruction:
    split: int
    whitebox: np.ndarray  # reconstructions, N x C x H x W in [0, 1]
    decoder: np.ndarray
    whitebox_ssim: float
    decoder_ssim: float
    whitebox_psnr: float | None
    decoder_psnr: float | None
    whitebox_match: float = float("nan")  # identity-matching accuracy among the N originals
    decoder_match: float = float("nan")
    strength: float = 0.0  # the defence's strength (0: none)
    accuracy: float | None = None  # task accuracy with the defence on, when measured

    @property
    def p_priv(self) -> float:
        return max(self.whitebox_ssim, self.decoder_ssim)


def _mean_scores(recon: np.ndarray, originals: np.ndarray) -> tuple[float, float | None]:
    ssims = [ssim(r, o) for r, o in zip(recon, originals)]
    psnrs = [psnr(r, o) for r, o in zip(recon, originals)]
    finite = [p for p in psnrs if p is not None]
    return float(np.mean(ssims)), (float(np.mean(finite)) if finite else None)


def attack_split(
    blocks: Sequence[Block],
    spec: InputSpec,
    split: int,
    images: AttackImages,
    s: AttackSettings,
    defence: Defence | None = None,
    strength: float = 0.0,
) -> SplitReconstruction:
    """Both attacks on the activation at ``split``, defended with ``strength`` (adaptive attacker)."""
    originals = images.evaluation.numpy()
    if strength > 0 and defence is None:
        raise ValueError("strength: a defence strength > 0 needs a calibrated Defence")
    if split == 0 and strength <= 0:
        wb = dec = originals.copy()  # the raw input is what was sent
    else:
        f = prefix(blocks, spec, split)
        with torch.no_grad():
            z = f(images.evaluation)
        defend = None
        if strength > 0:
            assert defence is not None
            z = defence.apply(z, split, strength, torch.Generator().manual_seed(s.seed + 104729))
            defend = lambda t, g: defence.apply(t, split, strength, g)  # noqa: E731
        wb = whitebox_attack(f, z, tuple(images.evaluation.shape[1:]), s, laplace=strength > 0).numpy()
        dec = decoder_attack(f, images.attacker, z, s, defend).numpy()
    wb_ssim, wb_psnr = _mean_scores(wb, originals)
    dec_ssim, dec_psnr = _mean_scores(dec, originals)
    return SplitReconstruction(
        split, wb, dec, wb_ssim, dec_ssim, wb_psnr, dec_psnr,
        identity_match(wb, originals), identity_match(dec, originals), float(strength),
    )


def defended_accuracy(
    blocks: Sequence[Block], spec: InputSpec, split: int, strength: float, defence: Defence | None,
    pixels: torch.Tensor, labels: np.ndarray, seed: int, draws: int = 5,
) -> float:
    """Task accuracy with the defence on at ``split`` (mean over ``draws`` noise draws)."""
    lower, upper = prefix(blocks, spec, split), nn.Sequential(*[b.module for b in blocks[split:]]).eval()
    gen = torch.Generator().manual_seed(seed + 15485863)
    accs = []
    with torch.no_grad():
        z = lower(pixels)
        for _ in range(draws if strength > 0 else 1):
            zd = defence.apply(z, split, strength, gen) if (defence is not None and strength > 0) else z
            accs.append(float((upper(zd).argmax(1).numpy() == labels).mean()))
    return float(np.mean(accs))


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


@dataclass(frozen=True)
class LabelOnly:
    """The label-only attacker's scores (what the task output alone reveals)."""

    ssim: float
    psnr: float | None
    match: float
    reconstructions: np.ndarray


def measure_label_only(images: AttackImages, blocks: Sequence[Block] | None = None,
                       spec: InputSpec | None = None) -> LabelOnly | None:
    recon = label_only_reconstructions(images, blocks, spec)
    if recon is None:
        return None
    originals = images.evaluation.numpy()
    value, p = _mean_scores(recon, originals)
    return LabelOnly(value, p, identity_match(recon, originals), recon)


def non_monotone_excess(curve: Sequence[float]) -> float:
    """The largest rise of the curve above its running minimum (0 for a non-increasing curve)."""
    low, worst = math.inf, 0.0
    for v in curve:
        low = min(low, v)
        worst = max(worst, v - low)
    return worst


def with_images(s: AttackSettings, n_images: int) -> AttackSettings:
    return replace(s, n_images=n_images)
