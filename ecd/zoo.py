"""The model zoo's names, and finding a model's manifest by name or path — torch-free.

Every model is named here, in one place; each entry points at its architecture module's ``build``
function (in the ``models`` package) by name, so listing and resolving models never imports torch.
Bundled models are shipped as package data (``ecd/artifacts/NAME``); models built on this machine
live under ``$ECD_MODEL_DIR`` (default ``~/.cache/ecd/models``), one folder each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Callable

from ecd.errors import ModelNotBuiltError, UnknownModelError
from ecd.manifest import MANIFEST_FILENAME, Manifest

DEFAULT_MODEL = "digits_cnn"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    builder: str  # "module:function", imported only to build
    bundled: bool  # built artifacts are committed under ecd/artifacts/NAME
    input_size: int  # default square input side, pixels

    def build_function(self) -> Callable[..., object]:
        module, func = self.builder.split(":")
        return getattr(import_module(module), func)


REGISTRY: dict[str, ModelEntry] = {
    e.name: e
    for e in [
        ModelEntry(
            "digits_cnn",
            "Small 6-block CNN trained here on scikit-learn's handwritten digits (upsampled to 32x32); "
            "the bundled default",
            "models.digits_cnn:build",
            bundled=True,
            input_size=32,
        ),
        ModelEntry(
            "faces_cnn",
            "Tiny 6-block CNN, face / not-face, trained here on scikit-image's LFW subset (25x25), "
            "with noise-aware fine-tuning for the device-side defence; bundled",
            "models.faces_cnn:build",
            bundled=True,
            input_size=25,
        ),
        *(
            ModelEntry(
                "orl_faces_cnn" + ("" if level == 0 else f"_level{level}"),
                f"Face / no-face on the ORL faces (32x32 grey), NoPeek privacy level {level}"
                + (": undefended, carries the levels' measured privacy table; bundled" if level == 0
                   else " (a level of orl_faces_cnn, run under its own id); bundled"),
                f"models.orl_nopeek:build_level_{level}",
                bundled=True,
                input_size=32,
            )
            for level in range(4)
        ),
        ModelEntry(
            "mobilenet_v2",
            "torchvision MobileNetV2: stem, 17 inverted-residual blocks, 1x1 conv, classifier",
            "models.torchvision_zoo:build_mobilenet_v2",
            bundled=False,
            input_size=224,
        ),
        ModelEntry(
            "resnet18",
            "torchvision ResNet-18: stem, 8 basic residual blocks, classifier",
            "models.torchvision_zoo:build_resnet18",
            bundled=False,
            input_size=224,
        ),
        ModelEntry(
            "alexnet",
            "torchvision AlexNet, a plain CNN, on a large 1000x1000 input (the shape of paper 000's "
            "Fig. 3: early activations outweigh the image)",
            "models.torchvision_zoo:build_alexnet",
            bundled=False,
            input_size=1000,
        ),
    ]
}


def known_models() -> list[str]:
    return sorted(REGISTRY)


def bundled_dir() -> Path:
    return Path(__file__).resolve().parent / "artifacts"


def user_model_dir() -> Path:
    """Where ``ecd models build`` writes models that are not bundled."""
    env = os.environ.get("ECD_MODEL_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ecd" / "models"


def model_dir(name: str) -> Path:
    """The folder a model named ``name`` is (or would be) built into."""
    if name not in REGISTRY:
        raise UnknownModelError(name, known_models())
    user = user_model_dir() / name
    if (user / MANIFEST_FILENAME).exists() or not REGISTRY[name].bundled:
        return user
    return bundled_dir() / name


def load_manifest(name_or_path: str | os.PathLike[str]) -> Manifest:
    """A manifest from a zoo name (``digits_cnn``) or a path to a model folder / manifest.json.

    A model rebuilt into ``$ECD_MODEL_DIR`` takes precedence over the bundled copy.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        return Manifest.load(path)
    directory = model_dir(text)
    if not (directory / MANIFEST_FILENAME).exists():
        raise ModelNotBuiltError(
            f"model {text!r} is not built on this machine (looked in {directory}); "
            f"build it with `ecd models build {text}` (needs the models extra: "
            f"pip install 'ecd-runtime[models]')"
        )
    return Manifest.load(directory)
