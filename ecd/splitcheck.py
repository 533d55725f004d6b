"""The identity check that keeps a split runtime honest, and per-block timing (torch-free).

For every split point b, running blocks ``[0, b)`` then ``[b, n)`` must give what the whole model
gives — against the torch full model's logits shipped in ``heldout.npz`` when the model has them,
else against the unsplit onnxruntime chain.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ecd.manifest import Manifest, load_heldout
from ecd.partition import Partition, SessionConfig

RELATIVE_TOLERANCE = 1e-4


def relative_max_abs_diff(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want| — scale-free, so one tolerance fits every model."""
    scale = float(np.max(np.abs(want)))
    return float(np.max(np.abs(got - want))) / (scale if scale > 0 else 1.0)


@dataclass(frozen=True)
class SplitCheck:
    split: int  # blocks [0, split) on the first tier, [split, n) on the second
    activation_shape: tuple[int, ...]
    activation_bytes: int  # per sample, float32
    rel_max_abs_diff: float
    argmax_agreement: float  # share of samples whose class equals the reference's
    accuracy: float | None  # against the labels, when known

    @property
    def ok(self) -> bool:
        return self.rel_max_abs_diff <= RELATIVE_TOLERANCE and self.argmax_agreement == 1.0


@dataclass(frozen=True)
class CheckInputs:
    x: np.ndarray  # preprocessed float32 batch
    reference: np.ndarray  # logits the split runs must reproduce
    reference_name: str  # "torch" or "onnxruntime (unsplit)"
    labels: np.ndarray | None


def check_inputs(manifest: Manifest, max_samples: int | None = None, seed: int = 0) -> CheckInputs:
    """The held-out set with torch's logits, or (for a model without one) seeded noise against the
    unsplit onnxruntime chain."""
    if manifest.heldout:
        held = load_heldout(manifest)
        n = len(held.labels) if max_samples is None else min(max_samples, len(held.labels))
        return CheckInputs(
            manifest.input.preprocess(held.images[:n]), held.torch_logits[:n], "torch", held.labels[:n]
        )
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((max_samples or 2, *manifest.input.shape)).astype(np.float32)
    whole = Partition(manifest, 0, manifest.n_blocks).run(x)
    return CheckInputs(x, whole, "onnxruntime (unsplit)", None)


def check_splits(
    manifest: Manifest, inputs: CheckInputs, config: SessionConfig | None = None
) -> list[SplitCheck]:
    n = manifest.n_blocks
    results = []
    for b in range(n + 1):
        activation = Partition(manifest, 0, b, config).run(inputs.x)
        out = Partition(manifest, b, n, config).run(activation)
        results.append(
            SplitCheck(
                split=b,
                activation_shape=manifest.activation_shape(b),
                activation_bytes=manifest.activation_bytes(b),
                rel_max_abs_diff=relative_max_abs_diff(out, inputs.reference),
                argmax_agreement=float(np.mean(out.argmax(1) == inputs.reference.argmax(1))),
                accuracy=None if inputs.labels is None else float(np.mean(out.argmax(1) == inputs.labels)),
            )
        )
    return results


def time_blocks(
    manifest: Manifest, runs: int = 20, warmup: int = 3, config: SessionConfig | None = None
) -> list[float]:
    """Median seconds per block for one sample on this host (onnxruntime, after warm-up)."""
    rng = np.random.default_rng(0)
    medians = []
    for i in range(manifest.n_blocks):
        part = Partition(manifest, i, i + 1, config)
        x = rng.standard_normal((1, *part.input_shape)).astype(np.float32)
        for _ in range(warmup):
            part.run(x)
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            part.run(x)
            samples.append(time.perf_counter() - t0)
        medians.append(float(np.median(samples)))
    return medians
