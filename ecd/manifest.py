"""The model manifest: the contract between the model zoo, the three services and the split decision.

A manifest is a JSON file beside a model's per-block ONNX files. It says what the model eats (input
spec), what each block is (shapes, bytes it emits, MACs, parameters, the file and its sha256) and,
once measured, how much an attacker can reconstruct at each split (``privacy``). Everything here is
torch-free: it runs on the device and the edge.

Shapes are per sample (no batch dimension); every block accepts any batch size.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecd.errors import IntegrityError, ManifestError, SplitRangeError

SCHEMA = "ecd.manifest/1"
MANIFEST_FILENAME = "manifest.json"
FLOAT32_BYTES = 4


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_version(block_sha256s: list[str]) -> str:
    """Version of a model = a hash over its block files' hashes, in block order.

    Any change to any block (weights, opset, structure) gives a new version, which frames carry so a
    tier never runs one version's activation through another version's blocks.
    """
    return hashlib.sha256("\n".join(block_sha256s).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class InputSpec:
    """What block 0 consumes, and how raw pixels become that tensor.

    ``x = (pixels * pixel_scale - mean[c]) / std[c]``, laid out NCHW as float32.
    """

    shape: tuple[int, ...]  # per sample, C x H x W
    dtype: str = "float32"
    layout: str = "NCHW"
    pixel_scale: float = 1.0 / 255.0  # raw pixel value -> [0, 1]
    mean: tuple[float, ...] = (0.0,)  # per channel, after pixel_scale
    std: tuple[float, ...] = (1.0,)  # per channel, after pixel_scale

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """Raw uint8 images ``[N, H, W]`` (grey) or ``[N, H, W, C]`` -> normalised float32 NCHW."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4:
            raise ManifestError(
                f"images: expected [N, H, W] or [N, H, W, C], got shape {list(images.shape)}"
            )
        got = (images.shape[3], images.shape[1], images.shape[2])
        if got != tuple(self.shape):
            raise ManifestError(f"images: expected C x H x W = {list(self.shape)}, got {list(got)}")
        x = images.astype(np.float32) * np.float32(self.pixel_scale)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, 1, 1, -1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, 1, 1, -1)
        x = (x - mean) / std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@dataclass(frozen=True)
class BlockInfo:
    """One block: the smallest unit a tier may run."""

    index: int
    name: str
    kind: str  # e.g. "conv", "residual", "inverted_residual", "classifier"
    file: str  # relative to the manifest's directory
    sha256: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    output_bytes_float32: int
    macs: int  # multiply-accumulates for one sample
    params: int

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclass(frozen=True)
class Manifest:
    model_id: str
    version: str
    description: str
    input: InputSpec
    labels: tuple[str, ...]
    blocks: tuple[BlockInfo, ...]
    training: dict[str, Any] | None = None  # how the weights came to be (dataset, seed, accuracy)
    privacy: dict[str, Any] | None = None  # measured model-inversion curve, when present
    heldout: dict[str, Any] | None = None  # bundled held-out images + torch reference logits
    build: dict[str, Any] = field(default_factory=dict)  # exporter versions, opset
    directory: Path | None = field(default=None, compare=False)  # where the block files are

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def activation_shape(self, split: int) -> tuple[int, ...]:
        """Per-sample shape of the tensor that crosses split ``split`` (0 = the input)."""
        self._check_split(split)
        if split == self.n_blocks:
            return self.blocks[-1].output_shape
        return self.blocks[split].input_shape

    def activation_bytes(self, split: int) -> int:
        """Bytes per sample of the float32 tensor that crosses split ``split``."""
        return int(np.prod(self.activation_shape(split))) * FLOAT32_BYTES

    def block_path(self, block: BlockInfo) -> Path:
        if self.directory is None:
            raise ManifestError(f"manifest of {self.model_id!r} has no directory to find {block.file}")
        return self.directory / block.file

    def _check_split(self, split: int) -> None:
        if not 0 <= split <= self.n_blocks:
            raise SplitRangeError(f"split: expected 0..{self.n_blocks}, got {split}")

    # --- (de)serialisation -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("directory")
        d = {"schema": SCHEMA, **d}
        for b in d["blocks"]:
            b["flops"] = 2 * b["macs"]
        return _lists(d)

    def write(self, directory: Path) -> Path:
        path = Path(directory) / MANIFEST_FILENAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, d: dict[str, Any], directory: Path | None = None) -> Manifest:
        where = f" in {directory / MANIFEST_FILENAME}" if directory else ""
        if d.get("schema") != SCHEMA:
            raise ManifestError(f"schema: expected {SCHEMA!r}, got {d.get('schema')!r}{where}")
        try:
            inp = d["input"]
            input_spec = InputSpec(
                shape=tuple(int(v) for v in inp["shape"]),
                dtype=str(inp["dtype"]),
                layout=str(inp["layout"]),
                pixel_scale=float(inp["pixel_scale"]),
                mean=tuple(float(v) for v in inp["mean"]),
                std=tuple(float(v) for v in inp["std"]),
            )
            blocks = tuple(
                BlockInfo(
                    index=int(b["index"]),
                    name=str(b["name"]),
                    kind=str(b["kind"]),
                    file=str(b["file"]),
                    sha256=str(b["sha256"]),
                    input_shape=tuple(int(v) for v in b["input_shape"]),
                    output_shape=tuple(int(v) for v in b["output_shape"]),
                    output_bytes_float32=int(b["output_bytes_float32"]),
                    macs=int(b["macs"]),
                    params=int(b["params"]),
                )
                for b in d["blocks"]
            )
            manifest = cls(
                model_id=str(d["model_id"]),
                version=str(d["version"]),
                description=str(d.get("description", "")),
                input=input_spec,
                labels=tuple(str(v) for v in d["labels"]),
                blocks=blocks,
                training=d.get("training"),
                privacy=d.get("privacy"),
                heldout=d.get("heldout"),
                build=dict(d.get("build", {})),
                directory=directory,
            )
        except KeyError as e:
            raise ManifestError(f"missing field {e.args[0]!r}{where}") from None
        except (TypeError, ValueError) as e:
            raise ManifestError(f"malformed manifest{where}: {e}") from None
        manifest._validate(where)
        return manifest

    def _validate(self, where: str) -> None:
        if not self.blocks:
            raise ManifestError(f"blocks: empty{where}")
        if self.blocks[0].input_shape != self.input.shape:
            raise ManifestError(
                f"blocks[0].input_shape {list(self.blocks[0].input_shape)} != input.shape "
                f"{list(self.input.shape)}{where}"
            )
        for i, (a, b) in enumerate(zip(self.blocks, self.blocks[1:])):
            if a.output_shape != b.input_shape:
                raise ManifestError(
                    f"blocks[{i + 1}].input_shape {list(b.input_shape)} != blocks[{i}].output_shape "
                    f"{list(a.output_shape)}{where}"
                )
        for i, b in enumerate(self.blocks):
            if b.index != i:
                raise ManifestError(f"blocks[{i}].index: expected {i}, got {b.index}{where}")
        expected = model_version([b.sha256 for b in self.blocks])
        if self.version != expected:
            raise ManifestError(
                f"version: {self.version!r} is not the hash of the block files ({expected!r}){where}"
            )

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Load ``path`` (a manifest.json or the directory holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_FILENAME
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise ManifestError(f"no manifest at {path}") from None
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path} is not valid JSON: {e}") from None
        return cls.from_dict(d, directory=path.parent)


def _lists(obj: Any) -> Any:
    """Tuples -> lists so the JSON is plain."""
    if isinstance(obj, dict):
        return {k: _lists(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_lists(v) for v in obj]
    return obj


@dataclass(frozen=True)
class HeldoutSet:
    """Held-out real images shipped with a model, and the torch full model's logits on them."""

    images: np.ndarray  # raw uint8, [N, H, W] or [N, H, W, C]
    labels: np.ndarray  # int64 [N]
    torch_logits: np.ndarray  # float32 [N, classes]


def load_heldout(manifest: Manifest) -> HeldoutSet:
    """The model's bundled held-out set, verified against the manifest's sha256."""
    if not manifest.heldout or manifest.directory is None:
        raise ManifestError(f"model {manifest.model_id!r} ships no held-out set (manifest field 'heldout')")
    path = manifest.directory / manifest.heldout["file"]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IntegrityError(f"held-out file missing: {path}") from None
    if sha256_bytes(data) != manifest.heldout["sha256"]:
        raise IntegrityError(f"held-out file {path} does not match the manifest's sha256")
    with np.load(io.BytesIO(data)) as npz:
        return HeldoutSet(npz["images"], npz["labels"], npz["torch_logits"])
