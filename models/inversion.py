"""The two model-inversion attacks and the noise defence that ``models/privacy.py`` measures at
every split: what an attacker reconstructs from the tensor a device sends, with or without noise on it.

The attacks are He, Zhang and Lee's, "Model inversion attacks against collaborative inference",
ACSAC 2019:

1. **White-box** (their regularised maximum likelihood, rMLE, §4): knowing the weights, start from
   noise and minimise ``‖f_{<b}(x̂) − z‖² / ‖z‖² + λ·TV(x̂)`` by Adam over the pixels.
2. **Learned decoder** (their black-box inverse network, §5): the attacker trains a decoder from
   activations to images on *its own* images (here the model's training split, disjoint from the
   evaluation images), then decodes the observed activations.

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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from ecd.manifest import InputSpec
from torch import nn

from models.export import Block


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
