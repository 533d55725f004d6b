"""Where a device's frames come from: the bundled held-out images, a folder of images, or a seeded
synthetic generator. Each yields (raw uint8 image as the model expects it, label or None), ``frames``
of them, or without end when ``frames`` is 0 (a long-running agent). And where a campaign task's
reading comes from: a simulated sensor."""

from __future__ import annotations

from itertools import count, cycle, islice
from pathlib import Path
from typing import Iterator

import numpy as np

from ecd.errors import ConfigError
from ecd.manifest import InputSpec, load_heldout
from ecd.types import Task

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".npy")

Sample = tuple[np.ndarray, int | None]


def heldout(model: str, frames: int) -> Iterator[Sample]:
    from ecd import zoo

    held = load_heldout(zoo.load_manifest(model))
    pairs = list(zip(held.images, (int(v) for v in held.labels)))
    return islice(cycle(pairs), frames or None)


def synthetic(spec: InputSpec, frames: int, seed: int = 0) -> Iterator[Sample]:
    rng = np.random.default_rng(seed)
    c, h, w = spec.shape
    for _ in (range(frames) if frames else count()):
        img = rng.integers(0, 256, (h, w) if c == 1 else (h, w, c), dtype=np.uint8)
        yield img, None


def folder(path: str, spec: InputSpec, frames: int) -> Iterator[Sample]:
    """Images in ``path`` (PNG/JPEG/… via Pillow, or .npy uint8), resized to the model's input."""
    root = Path(path)
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if root.is_dir() else []
    if not files:
        raise ConfigError(f"--source folder:{path}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    c, h, w = spec.shape
    images = [_load(p, c, h, w) for p in files]
    return ((img, None) for img in islice(cycle(images), frames or None))


def _load(path: Path, c: int, h: int, w: int) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        img = np.load(path)
        want = (h, w) if c == 1 else (h, w, c)
        if img.dtype != np.uint8 or img.shape != want:
            raise ConfigError(f"{path}: expected a uint8 array of shape {list(want)}, got {img.dtype} {list(img.shape)}")
        return img
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("L" if c == 1 else "RGB").resize((w, h))
        return np.asarray(im, dtype=np.uint8)


def open_source(source: str, model: str, spec: InputSpec, frames: int, seed: int = 0) -> Iterator[Sample]:
    if frames < 0:
        raise ConfigError(f"--frames: expected >= 0 (0 = until stopped), got {frames}")
    if source == "heldout":
        return heldout(model, frames)
    if source == "synthetic":
        return synthetic(spec, frames, seed)
    if source.startswith("folder:"):
        return folder(source[len("folder:"):], spec, frames)
    raise ConfigError(f"--source: expected heldout, synthetic or folder:PATH, got {source!r}")


class SimulatedSensor:
    """A device's scalar sensor (say, temperature in °C), simulated: a smooth field over the
    campaign's cells and slots plus N(0, 0.3) noise. ``corrupt`` makes a misbehaving device — biased
    by +6 and five times as noisy — the kind CrowdPower's quality and reputation should catch."""

    def __init__(self, seed: int = 0, corrupt: bool = False):
        self.rng = np.random.default_rng(seed)
        self.corrupt = corrupt

    @staticmethod
    def truth(task: Task) -> float:
        return 20.0 + 0.5 * np.sin(task.cell) + 0.1 * task.slot

    def read(self, task: Task) -> float:
        noise = self.rng.normal(0.0, 0.3 * (5 if self.corrupt else 1))
        return float(self.truth(task) + noise + (6.0 if self.corrupt else 0.0))
