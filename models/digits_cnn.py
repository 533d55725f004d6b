"""The bundled default: a small CNN trained here on real handwritten digits.

Data: scikit-learn's ``load_digits`` (1,797 real 8x8 scans of handwritten digits, 0-16 grey levels),
upsampled x4 with bilinear interpolation to 32x32 uint8 images so the early activations have the
spatial extent of a camera model's. The held-out split (20 %, stratified, fixed seed) is never seen
in training; it is shipped as ``heldout.npz`` for the demo and the device agent, and is where the
privacy attacks are evaluated (their attacker trains on the training split only).

Six blocks, each a unit a person recognises::

    conv1       1x32x32  -> 16x32x32   conv3x3 + BN + ReLU
    conv2      16x32x32  -> 32x16x16   conv3x3 + BN + ReLU + maxpool
    conv3      32x16x16  -> 64x8x8     conv3x3 + BN + ReLU + maxpool
    conv4       64x8x8   -> 64x4x4     conv3x3 + BN + ReLU + maxpool
    fc          64x4x4   -> 128        flatten + linear + ReLU (+ dropout in training)
    classifier     128   -> 10         linear (logits)
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

IMAGE_SIZE = 32
TEST_FRACTION = 0.2
SPLIT_SEED = 0  # the held-out split never changes with the training seed


@dataclass(frozen=True)
class DigitsData:
    train_images: np.ndarray  # uint8 [N, 32, 32]
    train_labels: np.ndarray  # int64 [N]
    test_images: np.ndarray
    test_labels: np.ndarray


def load_digits_split() -> DigitsData:
    """The real digits, upsampled to 32x32 uint8, split train / held-out with a fixed seed."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    small = digits.images / 16.0  # [N, 8, 8] in [0, 1]
    big = zoom(small, (1, IMAGE_SIZE / 8, IMAGE_SIZE / 8), order=1, grid_mode=True, mode="nearest")
    images = np.clip(np.rint(big * 255.0), 0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    tr_x, te_x, tr_y, te_y = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    return DigitsData(tr_x, tr_y, te_x, te_y)


class DigitsCNN(FourConvCNN):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = conv_block(1, 16, pool=False)
        self.conv2 = conv_block(16, 32, pool=True)
        self.conv3 = conv_block(32, 64, pool=True)
        self.conv4 = conv_block(64, 64, pool=True)
        self.fc = nn.Sequential(nn.Flatten(1), nn.Linear(64 * 4 * 4, 128), nn.ReLU(inplace=True), nn.Dropout(0.3))
        self.classifier = nn.Linear(128, 10)


def _shift_augment(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translations of up to ``max_shift`` pixels (pad with the background, crop)."""
    n, _, h, w = x.shape
    padded = nn.functional.pad(x, (max_shift,) * 4, value=float(x.min()))
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def train(
    model: DigitsCNN,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seed: int,
    epochs: int,
    batch_size: int = 64,
    lr: float = 2e-3,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * ((len(x) + batch_size - 1) // batch_size)
    )
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            xb = _shift_augment(x[idx], gen)
            opt.zero_grad()
            loss_fn(model(xb), y[idx]).backward()
            opt.step()
            sched.step()
    model.eval()


def build(*, weights: Path | None, seed: int, input_size: int, epochs: int = 30) -> ModelDefinition:
    if input_size != IMAGE_SIZE:
        raise ConfigError(f"--input-size: digits_cnn is trained at {IMAGE_SIZE}, got {input_size}")
    torch.manual_seed(seed)
    data = load_digits_split()
    spec = _input_spec(data.train_images)
    model = DigitsCNN()
    to_tensor = lambda imgs: torch.from_numpy(spec.preprocess(imgs))  # noqa: E731
    x_test = to_tensor(data.test_images)
    if weights is not None:
        load_weights(model, weights)
        model.eval()
        training = {"weights": f"user state_dict {Path(weights).name}"}
    else:
        train(model, to_tensor(data.train_images), torch.from_numpy(data.train_labels), seed=seed, epochs=epochs)
        training = trained_here("sklearn.datasets.load_digits, 8x8 upsampled x4 (bilinear) to 32x32 uint8", data, TEST_FRACTION,
                                SPLIT_SEED, seed, epochs, "Adam, one-cycle lr 2e-3, weight decay 1e-4, batch 64, +-2 px shifts")
    with torch.no_grad():
        logits = model(x_test).numpy()
    accuracy = float((logits.argmax(1) == data.test_labels).mean())
    training["heldout_accuracy"] = round(accuracy, 4)
    return ModelDefinition(
        model_id="digits_cnn",
        description="Small CNN on real handwritten digits (scikit-learn load_digits, 32x32)",
        full_model=model,
        blocks=model.blocks(),
        input_spec=spec,
        labels=[str(d) for d in range(10)],
        training=training,
        example=x_test[:1],
        heldout=(data.test_images, data.test_labels),
    )


def _input_spec(train_images: np.ndarray) -> InputSpec:
    scaled = train_images.astype(np.float64) / 255.0
    return InputSpec(
        shape=(1, IMAGE_SIZE, IMAGE_SIZE),
        mean=(round(float(scaled.mean()), 4),),
        std=(round(float(scaled.std()), 4),),
    )
