"""A second bundled model whose secret is not its label: face / not-face on real faces.

Data: scikit-image's ``skimage.data.lfw_subset()`` — 200 grey 25x25 images, the first 100 faces
from Labeled Faces in the Wild, the last 100 non-face patches (no identity labels ship with it).
The task (is there a face?) answers one bit; *who* it is must not leak. Split train / held-out 70 /
30 %, stratified, fixed seed; the held-out 60 images are shipped as ``heldout.npz`` and are where the
privacy attacks are evaluated (the attacker trains on the training split only).

Six tiny blocks (ONNX files of 0.6 to 10 KB)::

    conv1      1x25x25 ->  8x25x25   conv3x3 + BN + ReLU
    conv2      8x25x25 -> 16x12x12   conv3x3 + BN + ReLU + maxpool
    conv3     16x12x12 -> 16x6x6     conv3x3 + BN + ReLU + maxpool
    conv4      16x6x6  -> 16x3x3     conv3x3 + BN + ReLU + maxpool
    fc         16x3x3  -> 16         flatten + linear + ReLU
    classifier     16  -> 2          linear (logits: not-face, face)

Training (seeded): Adam with flips and +-2 px shifts, then **noise-aware fine-tuning** for the
device-side defence (Titcombe et al. 2021: Laplacian noise on the intermediate tensor, model
trained with the noise): every batch picks a split b in 3..n-1 and a strength in [0, 2] and adds
Laplace noise of scale ``strength x mean|z_b|`` (the batch's mean absolute activation, detached) to
the activation at b; BatchNorm statistics stay frozen. One set of blocks thus serves every
(split, strength) setting, so the cloud needs to know nothing about the defence (our choice:
Titcombe et al. fine-tune for one split). Why 3..n-1 and [0, 2] (our choice, measured): fine-tuned
over every split and [0, 8], noise at splits 0-2 still cost 7-43 points of accuracy at every
strength >= 1, and those batches took the fine-tuning away from the deep splits where the defence
can be afforded (the manifest's defence table holds the measured result).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ecd.errors import ConfigError
from ecd.manifest import InputSpec
from models.definition import ModelDefinition, load_weights, trained_here
from models.export import FourConvCNN, conv_block

IMAGE_SIZE = 25
TEST_FRACTION = 0.3
SPLIT_SEED = 0
MAX_TRAIN_STRENGTH = 2.0
FIRST_NOISY_SPLIT = 3  # noise-aware fine-tuning draws its split from FIRST_NOISY_SPLIT..n-1


@dataclass(frozen=True)
class FacesData:
    train_images: np.ndarray  # uint8 [N, 25, 25]
    train_labels: np.ndarray  # int64 [N]: 1 = face
    test_images: np.ndarray
    test_labels: np.ndarray


def load_faces_split() -> FacesData:
    from skimage.data import lfw_subset
    from sklearn.model_selection import train_test_split

    pixels = lfw_subset()  # float64 [200, 25, 25] in [0, 1]
    images = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
    labels = np.r_[np.ones(100), np.zeros(100)].astype(np.int64)
    tr_x, te_x, tr_y, te_y = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    return FacesData(tr_x, tr_y, te_x, te_y)


class FacesCNN(FourConvCNN):
    """``side``: the input's side in pixels (25 here; ``models.orl_nopeek`` uses the blocks at 32)."""

    def __init__(self, side: int = IMAGE_SIZE) -> None:
        super().__init__()
        self.conv1 = conv_block(1, 8, pool=False)
        self.conv2 = conv_block(8, 16, pool=True)
        self.conv3 = conv_block(16, 16, pool=True)
        self.conv4 = conv_block(16, 16, pool=True)
        self.fc = nn.Sequential(nn.Flatten(1), nn.Linear(16 * (side // 8) ** 2, 16), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(16, 2)


def _augment(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    padded = nn.functional.pad(x, (max_shift,) * 4, mode="replicate")
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def _laplace(shape: torch.Size, scale: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(shape, generator=gen) - 0.5
    return -scale * torch.sign(u) * torch.log1p(-2 * u.abs().clamp(max=0.5 - 1e-7))


def train(model: FacesCNN, x: torch.Tensor, y: torch.Tensor, *, seed: int, epochs: int, noisy: bool,
          lr: float = 3e-3, batch_size: int = 32) -> None:
    """Plain training, or (``noisy``) noise-aware fine-tuning with BatchNorm statistics frozen."""
    gen = torch.Generator().manual_seed(seed + (1 if noisy else 0))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    blocks = model.blocks()
    model.train()
    if noisy:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            h = _augment(x[idx], gen)
            split = int(torch.randint(FIRST_NOISY_SPLIT, len(blocks), (1,), generator=gen)) if noisy else -1
            strength = float(torch.rand(1, generator=gen)) * MAX_TRAIN_STRENGTH if noisy else 0.0
            for b, block in enumerate(blocks):
                if b == split and strength > 0:
                    h = h + _laplace(h.shape, strength * h.detach().abs().mean(), gen)
                h = block.module(h)
            opt.zero_grad()
            loss_fn(h, y[idx]).backward()
            opt.step()
            sched.step()
    model.eval()


def build(*, weights: Path | None, seed: int, input_size: int, epochs: int = 60, noise_epochs: int = 60) -> ModelDefinition:
    if input_size != IMAGE_SIZE:
        raise ConfigError(f"--input-size: faces_cnn is trained at {IMAGE_SIZE}, got {input_size}")
    torch.manual_seed(seed)
    data = load_faces_split()
    scaled = data.train_images.astype(np.float64) / 255.0
    spec = InputSpec(shape=(1, IMAGE_SIZE, IMAGE_SIZE), mean=(round(float(scaled.mean()), 4),),
                     std=(round(float(scaled.std()), 4),))
    to_tensor = lambda imgs: torch.from_numpy(spec.preprocess(imgs))  # noqa: E731
    x_train, y_train = to_tensor(data.train_images), torch.from_numpy(data.train_labels)
    x_test = to_tensor(data.test_images)
    model = FacesCNN()

    def accuracy() -> float:
        with torch.no_grad():
            return float((model(x_test).argmax(1).numpy() == data.test_labels).mean())

    if weights is not None:
        load_weights(model, weights)
        model.eval()
        training: dict = {"weights": f"user state_dict {Path(weights).name}"}
    else:
        train(model, x_train, y_train, seed=seed, epochs=epochs, noisy=False)
        clean_accuracy = accuracy()
        train(model, x_train, y_train, seed=seed, epochs=noise_epochs, noisy=True, lr=1e-3)
        training = trained_here(
            "skimage.data.lfw_subset: 100 LFW faces + 100 non-faces, grey 25x25; task face / not-face", data, TEST_FRACTION,
            SPLIT_SEED, seed, epochs, "Adam, one-cycle lr 3e-3, weight decay 1e-4, batch 32, flips and +-2 px shifts",
            noise_aware_fine_tuning=f"{noise_epochs} epochs, lr 1e-3, Laplace noise at a random split "
            f"({FIRST_NOISY_SPLIT}..n-1) with strength U[0, {MAX_TRAIN_STRENGTH:g}] x the batch's mean |activation|, BatchNorm frozen",
            heldout_accuracy_before_fine_tuning=round(clean_accuracy, 4),
        )
    training["heldout_accuracy"] = round(accuracy(), 4)
    return ModelDefinition(
        model_id="faces_cnn",
        description="Tiny CNN: face / not-face on scikit-image's LFW subset (25x25 grey), noise-aware",
        full_model=model,
        blocks=model.blocks(),
        input_spec=spec,
        labels=["not_face", "face"],
        training=training,
        example=x_test[:1],
        heldout=(data.test_images, data.test_labels),
    )
