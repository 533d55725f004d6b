"""What an architecture module hands to the exporter, and the shared build entry point."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ecd.errors import EcdError, UnknownModelError
from ecd.manifest import InputSpec, Manifest
from models.export import Block, export_model
from ecd.zoo import REGISTRY, known_models


@dataclass
class ModelDefinition:
    """A model ready to export: the full torch module and its block decomposition."""

    model_id: str
    description: str
    full_model: nn.Module  # the reference the blocks must reproduce
    blocks: Sequence[Block]
    input_spec: InputSpec
    labels: Sequence[str]
    training: dict[str, Any] | None = None
    example: torch.Tensor | None = None  # a real input for shape tracing, when one is at hand
    heldout: tuple[np.ndarray, np.ndarray] | None = None  # raw uint8 images, labels


class WeightsError(EcdError, ValueError):
    """A --weights file that cannot be read or does not fit the architecture."""


def load_weights(module: nn.Module, path: Path) -> None:
    """Load a user's state_dict file (plain, or wrapped as {"state_dict": ...}) strictly."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"--weights: no such file {path}") from None
    except Exception as e:  # torch raises many types for a corrupt file
        raise WeightsError(f"--weights: cannot read {path} as a torch state_dict: {e}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"--weights: {path} holds a {type(state).__name__}, not a state_dict")
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches raise even when not strict
        raise WeightsError(f"--weights: {path} does not fit {type(module).__name__}: {e}") from None
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"--weights: {path} does not fit {type(module).__name__}: "
            f"missing keys {result.missing_keys[:5]}, unexpected keys {result.unexpected_keys[:5]}"
        )


def trained_here(dataset: str, data: Any, test_fraction: float, split_seed: int, seed: int, epochs: int, optimizer: str,
                 **more: Any) -> dict:
    """The ``training`` record a manifest carries for weights trained by ``ecd models build``: what
    data, which held-out split (the same for every training seed), how."""
    return {
        "weights": "trained here",
        "dataset": dataset,
        "split": f"train_test_split(test_size={test_fraction}, stratify=labels, random_state={split_seed})",
        "n_train": int(len(data.train_labels)),
        "n_test": int(len(data.test_labels)),
        "seed": seed,
        "epochs": epochs,
        "optimizer": optimizer,
        **more,
    }


def define_model(
    name: str, *, weights: Path | None = None, seed: int = 0, input_size: int | None = None
) -> ModelDefinition:
    if name not in REGISTRY:
        raise UnknownModelError(name, known_models())
    entry = REGISTRY[name]
    define = entry.build_function()
    return define(weights=weights, seed=seed, input_size=input_size or entry.input_size)


def build_model(
    name: str,
    out_dir: Path,
    *,
    weights: Path | None = None,
    seed: int = 0,
    input_size: int | None = None,
) -> tuple[Manifest, ModelDefinition]:
    """Define (train, for the bundled model) and export ``name`` into ``out_dir``."""
    definition = define_model(name, weights=weights, seed=seed, input_size=input_size)
    manifest = export_definition(definition, out_dir, example=definition.example, heldout=definition.heldout,
                                 reference_model=definition.full_model)
    return manifest, definition


def export_definition(definition: ModelDefinition, out_dir: Path, **more) -> Manifest:
    """``definition``'s blocks, input, labels and training record exported into ``out_dir``; ``more``:
    :func:`models.export.export_model`'s other arguments (an example, a held-out set, a reference model)."""
    return export_model(
        model_id=definition.model_id,
        description=definition.description,
        blocks=definition.blocks,
        input_spec=definition.input_spec,
        labels=definition.labels,
        out_dir=out_dir,
        training=definition.training,
        **more,
    )
