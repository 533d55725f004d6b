"""Run blocks ``[start, stop)`` of a model with onnxruntime — the unit each tier executes.

Torch-free: this is what a device agent on a Raspberry Pi and an edge node import.

Each block is its own ONNX file and its own ``InferenceSession``; a partition chains them. Chaining
costs one numpy hand-off per block boundary (measured in ``benchmarks/partition_overhead.py``);
fusing a partition's blocks into one graph is the later optimisation if that overhead matters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from ecd.errors import InputSpecError, IntegrityError, SplitRangeError
from ecd.manifest import Manifest, sha256_bytes


@dataclass(frozen=True)
class SessionConfig:
    """onnxruntime settings for one tier."""

    intra_op_threads: int = 0  # 0 = onnxruntime's default (one per physical core)
    graph_optimization: str = "all"  # "disable" | "basic" | "extended" | "all"
    # onnxruntime's pool threads spin on a core after every run, waiting for the next: with one
    # session per block, an agent at 20 frames/s burnt a whole core doing nothing (benchmarks/panel_cost.py)
    # — a phone's battery is what the ECD utility is trying to save. Off by default.
    spin: bool = False

    def session_options(self) -> ort.SessionOptions:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op_threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spin else "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "1" if self.spin else "0")
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.graph_optimization]
        return opts


def load_block_session(
    manifest: Manifest, index: int, opts: ort.SessionOptions
) -> tuple[str, str, ort.InferenceSession]:
    """(input name, output name, session) of block ``index``, after checking the file's sha256."""
    block = manifest.blocks[index]
    path = manifest.block_path(block)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IntegrityError(f"block file missing: {path}") from None
    digest = sha256_bytes(data)
    if digest != block.sha256:
        raise IntegrityError(
            f"block file {path} has sha256 {digest[:16]}…, manifest expects "
            f"{block.sha256[:16]}… (corrupt or from another model version)"
        )
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    return sess.get_inputs()[0].name, sess.get_outputs()[0].name, sess


class BlockRunner:
    """Any block range of one model, each block's session loaded (and verified) once, on first use.

    What a service uses: the edge and the cloud run a different ``[start, stop)`` per device.
    Inputs are checked by the caller (the codec checks shapes against the manifest).
    """

    def __init__(self, manifest: Manifest, config: SessionConfig | None = None):
        self.manifest = manifest
        self._opts = (config or SessionConfig()).session_options()
        self._sessions: dict[int, tuple[str, str, ort.InferenceSession]] = {}

    def run(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        if not (0 <= start <= stop <= self.manifest.n_blocks):
            raise SplitRangeError(f"block range [start, stop): got [{start}, {stop}) of {self.manifest.n_blocks}")
        for i in range(start, stop):
            if i not in self._sessions:
                self._sessions[i] = load_block_session(self.manifest, i, self._opts)
            in_name, out_name, sess = self._sessions[i]
            x = sess.run([out_name], {in_name: x})[0]
        return x


class Partition:
    """Blocks ``[start, stop)`` of ``manifest``'s model, verified against their sha256.

    An empty partition (``start == stop``) is the identity: it is what a device that uploads its raw
    input (split 0) or an edge node that only relays runs.
    """

    def __init__(
        self,
        manifest: Manifest,
        start: int,
        stop: int,
        config: SessionConfig | None = None,
    ):
        n = manifest.n_blocks
        if not (0 <= start <= stop <= n):
            raise SplitRangeError(
                f"block range [start, stop): expected 0 <= start <= stop <= {n}, got [{start}, {stop})"
            )
        self.manifest = manifest
        self.start = start
        self.stop = stop
        opts = (config or SessionConfig()).session_options()
        self._sessions = [load_block_session(manifest, i, opts) for i in range(start, stop)]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample shape this partition accepts."""
        return self.manifest.activation_shape(self.start)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.manifest.activation_shape(self.stop)

    def check_input(self, x: np.ndarray) -> None:
        """Raise :class:`InputSpecError` naming expected vs got unless ``x`` is a float32 batch of
        ``input_shape``."""
        if not isinstance(x, np.ndarray):
            raise InputSpecError(f"input: expected numpy.ndarray, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise InputSpecError(f"input dtype: expected float32, got {x.dtype}")
        expected = ("N", *self.input_shape)
        if x.ndim != len(expected) or tuple(x.shape[1:]) != self.input_shape or x.shape[0] < 1:
            raise InputSpecError(
                f"input shape: expected [{', '.join(map(str, expected))}] "
                f"(blocks [{self.start}, {self.stop}) of {self.manifest.model_id}), "
                f"got {list(x.shape)}"
            )

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run the batch ``x`` through every block of the partition."""
        self.check_input(x)
        for in_name, out_name, sess in self._sessions:
            x = sess.run([out_name], {in_name: x})[0]
        return x

    def __repr__(self) -> str:
        return f"Partition({self.manifest.model_id}@{self.manifest.version}, [{self.start}, {self.stop}))"
