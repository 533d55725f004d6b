"""Per-block ONNX export and manifest writing (torch side).

A model arrives as the full torch module plus its ordered list of blocks; chaining the blocks must
compute exactly what the full module computes (the tests hold every split to that). Each block is
exported to its own ONNX file with a dynamic batch axis, and the manifest records its shapes, the
bytes it emits, its MACs (``torch.utils.flop_counter``: FLOPs / 2) and its parameter count.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ecd.manifest import (
    FLOAT32_BYTES,
    BlockInfo,
    InputSpec,
    Manifest,
    model_version,
    sha256_bytes,
)

ONNX_OPSET = 17
# onnx 1.23 writes IR 14 by default; onnxruntime 1.31 reads at most 13 and a Pi's older
# onnxruntime (1.16+) reads 9. Opset 17 needs IR >= 8.
ONNX_IR_VERSION = 9


@dataclass
class Block:
    """The smallest unit a tier may run: a named torch module with a kind a person recognises."""

    name: str
    kind: str
    module: nn.Module


def conv_block(cin: int, cout: int, pool: bool) -> nn.Sequential:
    """3x3 conv (no bias), batch norm, ReLU, and a 2x2 max pool when ``pool``."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class FourConvCNN(nn.Module):
    """The bundled models' shape: four conv blocks, a fully connected block, a classifier — six
    blocks, so six split points past the input. Subclasses set the six modules."""

    conv1: nn.Module
    conv2: nn.Module
    conv3: nn.Module
    conv4: nn.Module
    fc: nn.Module
    classifier: nn.Module

    def blocks(self) -> list[Block]:
        return [
            Block("conv1", "conv", self.conv1),
            Block("conv2", "conv", self.conv2),
            Block("conv3", "conv", self.conv3),
            Block("conv4", "conv", self.conv4),
            Block("fc", "fully_connected", self.fc),
            Block("classifier", "classifier", self.classifier),
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks():
            x = block.module(x)
        return x


class Chain(nn.Module):
    """The blocks run one after another — the block decomposition as a torch module."""

    def __init__(self, blocks: Sequence[Block]):
        super().__init__()
        self.stages = nn.ModuleList(b.module for b in blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x


def count_macs(module: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        module(x)
    return int(counter.get_total_flops()) // 2


def export_block(module: nn.Module, example: torch.Tensor) -> bytes:
    """One block as ONNX bytes with a dynamic batch axis, at the IR version onnxruntime reads."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module,
            (example,),
            buf,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    proto = onnx.load_from_string(buf.getvalue())
    proto.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def export_model(
    *,
    model_id: str,
    description: str,
    blocks: Sequence[Block],
    input_spec: InputSpec,
    labels: Sequence[str],
    out_dir: Path,
    training: dict[str, Any] | None = None,
    example: torch.Tensor | None = None,
    heldout: tuple[np.ndarray, np.ndarray] | None = None,
    reference_model: nn.Module | None = None,
) -> Manifest:
    """Export every block to ``out_dir`` and write its manifest; returns the manifest.

    With the ``reference_model`` (the full torch model), saves its state_dict as ``weights.pt`` for
    the white-box privacy attack; with ``heldout`` (raw uint8 images, labels) too, also writes
    ``heldout.npz`` holding the images, labels and the full torch model's logits, so a torch-free
    machine can check every split against torch.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*out_dir.glob("block_*.onnx"), out_dir / WEIGHTS_FILENAME, out_dir / HELDOUT_FILENAME]:
        stale.unlink(missing_ok=True)
    x = example if example is not None else torch.randn(1, *input_spec.shape)
    infos: list[BlockInfo] = []
    with torch.no_grad():
        for i, block in enumerate(blocks):
            module = block.module.eval()
            macs = count_macs(module, x)
            y = module(x)
            data = export_block(module, x)
            filename = f"block_{i:02d}_{block.name}.onnx"
            (out_dir / filename).write_bytes(data)
            out_shape = tuple(int(v) for v in y.shape[1:])
            infos.append(
                BlockInfo(
                    index=i,
                    name=block.name,
                    kind=block.kind,
                    file=filename,
                    sha256=sha256_bytes(data),
                    input_shape=tuple(int(v) for v in x.shape[1:]),
                    output_shape=out_shape,
                    output_bytes_float32=int(torch.tensor(out_shape).prod()) * FLOAT32_BYTES,
                    macs=macs,
                    params=sum(p.numel() for p in module.parameters()),
                )
            )
            x = y
    build = {
        "torch": torch.__version__.split("+")[0],
        "onnx": onnx.__version__,
        "opset": ONNX_OPSET,
        "ir_version": ONNX_IR_VERSION,
    }
    if reference_model is not None:
        # The white-box privacy attack needs the weights; a device never loads this file.
        weights = out_dir / WEIGHTS_FILENAME
        torch.save(reference_model.state_dict(), weights)
        build["torch_state_dict"] = {"file": WEIGHTS_FILENAME, "sha256": sha256_bytes(weights.read_bytes())}
    heldout_info = None
    if heldout is not None:
        if reference_model is None:
            raise ValueError("reference_model: needed to record torch logits for the held-out set")
        heldout_info = write_heldout(out_dir, heldout[0], heldout[1], input_spec, reference_model)
    manifest = Manifest(
        model_id=model_id,
        version=model_version([b.sha256 for b in infos]),
        description=description,
        input=input_spec,
        labels=tuple(labels),
        blocks=tuple(infos),
        training=training,
        privacy=None,
        heldout=heldout_info,
        build=build,
        directory=out_dir,
    )
    manifest.write(out_dir)
    return manifest


HELDOUT_FILENAME = "heldout.npz"
WEIGHTS_FILENAME = "weights.pt"


def write_heldout(
    out_dir: Path, images: np.ndarray, labels: np.ndarray, spec: InputSpec, model: nn.Module
) -> dict[str, Any]:
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(spec.preprocess(images))).numpy()
    path = Path(out_dir) / HELDOUT_FILENAME
    np.savez_compressed(path, images=images, labels=labels, torch_logits=logits.astype(np.float32))
    return {
        "file": HELDOUT_FILENAME,
        "sha256": sha256_bytes(path.read_bytes()),
        "n": int(len(labels)),
        "torch_accuracy": round(float((logits.argmax(1) == labels).mean()), 4),
    }
