"""One place that names every model of the zoo (torch-free).

Each entry points at its architecture module's ``build`` function by name, so listing and resolving
models never imports torch; ``ecd models build NAME`` imports the module.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Callable


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    builder: str  # "module:function", imported only to build
    bundled: bool  # built artifacts are committed under models/artifacts/NAME
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
