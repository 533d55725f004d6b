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

**Defence** (``Defence``): Laplace noise added to the activation on the device before it is sent,
with scale ``strength x mean|z_b|`` (mean absolute activation at split b over the attacker-free
training images: calibration, our choice) — the noise defence of Titcombe, Hall, Papadopoulos and
Romanini, "Practical defences against model inversion attacks for split neural networks" (ICLR 2021
workshop on distributed and private ML), who add Laplacian noise to the intermediate tensor and
train the model with that noise. We train once with noise at a random split and strength (so one
set of blocks serves every setting; ``models.faces_cnn``); the bundled digits model is *not*
fine-tuned, so its table shows what noise alone costs. Both attacks adapt (the attacker knows the
defence): the decoder trains on activations noised as the device does (fresh noise every epoch),
and the white-box attack maximises the Laplace likelihood (an L1 feature loss) instead of L2.

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


# --- the defence -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Defence:
    """Laplace noise of scale ``strength x scale[b]`` on the activation sent at split b."""

    scale: tuple[float, ...]  # per split 0..n: mean |activation| over the training images

    def apply(self, z: torch.Tensor, split: int, strength: float, gen: torch.Generator) -> torch.Tensor:
        if strength <= 0:
            return z
        b = strength * self.scale[split]
        u = torch.rand(z.shape, generator=gen) - 0.5  # Laplace by inverse CDF
        return z - b * torch.sign(u) * torch.log1p(-2 * u.abs().clamp(max=0.5 - 1e-7))


def calibrate(blocks: Sequence[Block], spec: InputSpec, images: torch.Tensor) -> Defence:
    """Mean absolute activation at every split, on ``images`` (pixels in [0, 1])."""
    scales = []
    with torch.no_grad():
        x = Normalise(spec)(images)
        scales.append(float(x.abs().mean()))
        for block in blocks:
            x = block.module.eval()(x)
            scales.append(float(x.abs().mean()))
    return Defence(tuple(round(v, 6) for v in scales))


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


def whitebox_attack(
    f: nn.Module, z: torch.Tensor, image_shape: Sequence[int], s: AttackSettings, laplace: bool = False
) -> torch.Tensor:
    """Reconstruct pixels from activations ``z`` by optimising from noise (He et al. §4, rMLE).

    ``laplace``: ``z`` carries Laplace noise; maximise its likelihood (L1 feature loss, ours)."""
    gen = torch.Generator().manual_seed(s.seed)
    u = (0.5 * torch.randn((len(z), *image_shape), generator=gen)).requires_grad_(True)
    opt = torch.optim.Adam([u], lr=s.whitebox_lr)
    dims = tuple(range(1, z.ndim))
    z_norm = (z.abs() if laplace else z.pow(2)).sum(dims).clamp_min(1e-12)
    for _ in range(s.whitebox_iters):
        opt.zero_grad()
        x = torch.sigmoid(u)
        diff = f(x) - z
        feature = ((diff.abs() if laplace else diff.pow(2)).sum(dims) / z_norm).mean()
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
    defend: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Train an inverse network on the attacker's own images, then decode ``z`` (He et al. §5).

    ``defend``: the device's defence, which the attacker knows and applies to its own training
    activations with fresh noise every epoch (the adaptive attacker)."""
    torch.manual_seed(s.seed)
    with torch.no_grad():
        clean_z = torch.cat([f(attacker_images[i : i + 256]) for i in range(0, len(attacker_images), 256)])
    train_z = clean_z
    decoder = make_decoder(tuple(z.shape[1:]), tuple(attacker_images.shape[1:]), s.decoder_width)
    opt = torch.optim.Adam(decoder.parameters(), lr=s.decoder_lr)
    gen = torch.Generator().manual_seed(s.seed)
    noise_gen = torch.Generator().manual_seed(s.seed + 7919)
    decoder.train()
    for _ in range(s.decoder_epochs):
        if defend is not None:
            train_z = defend(clean_z, noise_gen)
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
                "ssim": [rnd(r.whitebox_ssim) for r in results],
                "psnr_db": [rnd(r.whitebox_psnr) for r in results],
                "identity_match": [rnd(r.whitebox_match) for r in results],
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
                "identity_match": [rnd(r.decoder_match) for r in results],
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


def non_monotone_excess(curve: Sequence[float]) -> float:
    """The largest rise of the curve above its running minimum (0 for a non-increasing curve)."""
    low, worst = math.inf, 0.0
    for v in curve:
        low = min(low, v)
        worst = max(worst, v - low)
    return worst


def with_images(s: AttackSettings, n_images: int) -> AttackSettings:
    return replace(s, n_images=n_images)
