"""Task heads over a model's final output — paper 000's "dynamic structure": heads in the cloud can
be added or swapped at run time while the devices' lower layers stay fixed.

Every model has the built-in head ``class`` (softmax over the output, the manifest's labels). Added
heads are linear maps over the logits or the probabilities: ``scores = W · f(output) + bias``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ecd.errors import RequestError

BUILTIN_HEAD = "class"
INPUTS = ("logits", "probabilities")


class HeadError(RequestError):
    """A head spec that cannot be applied; the message names the field."""


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class LinearHead:
    name: str
    labels: tuple[str, ...]
    weight: np.ndarray  # len(labels) x output size
    bias: np.ndarray  # len(labels)
    input: str  # "logits" | "probabilities"
    identity: bool = False  # the built-in head: W = I, bias = 0, so no product is computed

    def scores(self, output: np.ndarray) -> np.ndarray:
        """Why ``identity``: W · p for W = I was a 1000 x 1000 product per frame on an ImageNet
        model, most of the cloud's CPU when it ran no block (found by profiling the cloud)."""
        x = softmax(output) if self.input == "probabilities" else output
        if self.identity:
            return x
        return x @ self.weight.T + self.bias

    def to_spec(self) -> dict:
        return {
            "name": self.name,
            "labels": list(self.labels),
            "weight": self.weight.ravel().tolist(),
            "bias": self.bias.tolist(),
            "input": self.input,
        }


def builtin_head(labels: tuple[str, ...]) -> LinearHead:
    k = len(labels)
    return LinearHead(BUILTIN_HEAD, labels, np.eye(k, dtype=np.float32), np.zeros(k, np.float32), "probabilities",
                      identity=True)


def make_head(name: str, labels: list[str], weight: list[float], bias: list[float], input: str, output_size: int) -> LinearHead:
    """Validate a head spec against the model's output size."""
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise HeadError(f"name: expected letters, digits, '_' or '-', got {name!r}")
    if name == BUILTIN_HEAD:
        raise HeadError(f"name: {BUILTIN_HEAD!r} is the built-in head and cannot be replaced")
    if not labels:
        raise HeadError("labels: at least one label is needed")
    if input not in INPUTS:
        raise HeadError(f"input: expected LOGITS or PROBABILITIES, got {input!r}")
    k = len(labels)
    if len(weight) != k * output_size:
        raise HeadError(f"weight: expected {k} x {output_size} = {k * output_size} values (labels x model output), got {len(weight)}")
    if bias and len(bias) != k:
        raise HeadError(f"bias: expected {k} values (one per label) or none, got {len(bias)}")
    w = np.asarray(weight, dtype=np.float32).reshape(k, output_size)
    b = np.asarray(bias, dtype=np.float32) if bias else np.zeros(k, np.float32)
    if not (np.isfinite(w).all() and np.isfinite(b).all()):
        raise HeadError("weight, bias: must be finite")
    return LinearHead(name, tuple(labels), w, b, input)


def head_from_spec(spec: dict, output_size: int) -> LinearHead:
    return make_head(spec["name"], spec["labels"], spec["weight"], spec["bias"], spec["input"], output_size)


def parity_head_weights(labels: tuple[str, ...]) -> tuple[list[str], list[float]]:
    """The odd/even head for a digits model: P(even) and P(odd) summed from the class probabilities."""
    digits = [int(l) for l in labels]
    weight = [1.0 if d % 2 == 0 else 0.0 for d in digits] + [1.0 if d % 2 else 0.0 for d in digits]
    assert math.isclose(sum(weight), len(digits))
    return ["even", "odd"], weight
