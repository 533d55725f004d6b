"""torchvision architectures cut into blocks at the level a person recognises.

Weights are random (seeded) unless the user passes a state_dict file; nothing is downloaded. The
class labels are ImageNet's, read from torchvision's bundled metadata (no network).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from ecd.manifest import InputSpec
from models.definition import ModelDefinition, load_weights
from models.export import Block

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _prepare(make, weights: Path | None, seed: int) -> nn.Module:
    """``make(weights=None)``'s model with random weights drawn from ``seed``, or the user's ``weights``
    loaded into it; in eval mode."""
    torch.manual_seed(seed)
    model = make(weights=None)
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def _definition(model_id: str, description: str, m: nn.Module, blocks: list[Block], imagenet_weights,
                *, weights: Path | None, seed: int, input_size: int) -> ModelDefinition:
    """What every torchvision model shares: ImageNet's input normalisation and class labels (from
    ``imagenet_weights``' metadata: nothing is downloaded), and where its weights came from."""
    return ModelDefinition(
        model_id=model_id,
        description=description,
        full_model=m,
        blocks=blocks,
        input_spec=InputSpec(shape=(3, input_size, input_size), mean=IMAGENET_MEAN, std=IMAGENET_STD),
        labels=imagenet_weights.meta["categories"],
        training={"weights": f"user state_dict {Path(weights).name}"} if weights is not None
        else {"weights": "random", "seed": seed},
    )


def build_mobilenet_v2(*, weights: Path | None, seed: int, input_size: int) -> ModelDefinition:
    m = _prepare(torchvision.models.mobilenet_v2, weights, seed)
    blocks = [Block("stem", "conv", m.features[0])]
    blocks += [Block(f"ir{i}", "inverted_residual", m.features[i]) for i in range(1, 18)]
    blocks.append(Block("conv_last", "conv", m.features[18]))
    blocks.append(
        Block(
            "classifier",
            "classifier",
            nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(1), m.classifier),
        )
    )
    return _definition("mobilenet_v2", "torchvision MobileNetV2", m, blocks, torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1,
                       weights=weights, seed=seed, input_size=input_size)


def build_resnet18(*, weights: Path | None, seed: int, input_size: int) -> ModelDefinition:
    m = _prepare(torchvision.models.resnet18, weights, seed)
    blocks = [Block("stem", "conv", nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool))]
    for li in range(1, 5):
        layer = getattr(m, f"layer{li}")
        blocks += [Block(f"layer{li}_{bi}", "residual", layer[bi]) for bi in range(len(layer))]
    blocks.append(Block("head", "classifier", nn.Sequential(m.avgpool, nn.Flatten(1), m.fc)))
    return _definition("resnet18", "torchvision ResNet-18", m, blocks, torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
                       weights=weights, seed=seed, input_size=input_size)


def build_alexnet(*, weights: Path | None, seed: int, input_size: int) -> ModelDefinition:
    m = _prepare(torchvision.models.alexnet, weights, seed)
    f, c = list(m.features), list(m.classifier)
    blocks = [
        Block("conv1", "conv", nn.Sequential(*f[0:2])),
        Block("pool1", "pool", f[2]),
        Block("conv2", "conv", nn.Sequential(*f[3:5])),
        Block("pool2", "pool", f[5]),
        Block("conv3", "conv", nn.Sequential(*f[6:8])),
        Block("conv4", "conv", nn.Sequential(*f[8:10])),
        Block("conv5", "conv", nn.Sequential(*f[10:12])),
        Block("pool5", "pool", f[12]),
        Block("fc6", "fully_connected", nn.Sequential(m.avgpool, nn.Flatten(1), *c[0:3])),
        Block("fc7", "fully_connected", nn.Sequential(*c[3:6])),
        Block("fc8", "classifier", nn.Sequential(*c[6:7])),
    ]
    description = f"torchvision AlexNet on a {input_size}x{input_size} input"
    return _definition("alexnet", description, m, blocks, torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
                       weights=weights, seed=seed, input_size=input_size)
