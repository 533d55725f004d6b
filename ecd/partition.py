"""Run blocks ``[start, stop)`` of a model with onnxruntime — the unit each tier executes.

Torch-free: this is what a device agent on a Raspberry Pi and an edge node import.

Each block is its own ONNX file. A tier whose block range is fixed runs **one fused session** for
``[start, stop)``: the block files (each sha256-checked against the manifest) merged into one graph
with ``onnx.compose`` — chaining one session per block cost 1.5x on digits_cnn and 3x on
MobileNetV2 (``benchmarks/partition_overhead.py``). The fused graph is cached under
``$ECD_MODEL_DIR/fused/`` (keyed by the digests of the blocks it came from), so a restart loads it
without merging again. ``SessionConfig(fused=False)`` keeps one session per block, where per-block timing
is what is measured (``ecd models check``).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from ecd.errors import InputSpecError, IntegrityError, SplitRangeError
from ecd.manifest import Manifest, sha256_bytes


MAX_INTRA_OP_THREADS = 64


@dataclass(frozen=True)
class SessionConfig:
    """onnxruntime settings for one tier."""

    intra_op_threads: int = 0  # 0 = onnxruntime's default (one per physical core)
    graph_optimization: str = "all"  # "disable" | "basic" | "extended" | "all"
    # onnxruntime's pool threads spin on a core after every run, waiting for the next: with one
    # session per block, an agent at 20 frames/s burnt a whole core doing nothing (benchmarks/panel_cost.py)
    # — a phone's battery is what the ECD utility is trying to save. Off by default.
    spin: bool = False
    fused: bool = True  # one merged graph per block range (False: a session per block, for per-block timing)

    def check(self) -> None:
        """Refuse settings naming the option: a typo of 10,000 threads would start that many per model."""
        from ecd.errors import ConfigError

        if not 0 <= self.intra_op_threads <= MAX_INTRA_OP_THREADS:
            raise ConfigError(f"intra_op_threads: expected 0 (one per core) to {MAX_INTRA_OP_THREADS}, got {self.intra_op_threads}")

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


def read_block(manifest: Manifest, index: int) -> bytes:
    """Block ``index``'s ONNX bytes, after checking them against the manifest's sha256."""
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
    return data


def _session(data: bytes, opts: ort.SessionOptions) -> tuple[str, str, ort.InferenceSession]:
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    return sess.get_inputs()[0].name, sess.get_outputs()[0].name, sess


def load_block_session(
    manifest: Manifest, index: int, opts: ort.SessionOptions
) -> tuple[str, str, ort.InferenceSession]:
    """(input name, output name, session) of block ``index``, after checking the file's sha256."""
    return _session(read_block(manifest, index), opts)


def fused_graph(manifest: Manifest, start: int, stop: int) -> bytes:
    """One ONNX graph for blocks ``[start, stop)``: each block (sha256-checked) merged after the
    previous one, its output feeding the next block's input, every name prefixed by its block
    (``b3_…``) so that none collide. Cached under ``$ECD_MODEL_DIR/fused/MODEL/``, keyed by the
    blocks' digests, beside the digest of the cached file itself: one that does not match is rebuilt."""
    blocks = [read_block(manifest, i) for i in range(start, stop)]
    key = sha256_bytes("".join(manifest.blocks[i].sha256 for i in range(start, stop)).encode())
    from ecd.zoo import user_model_dir

    cache = user_model_dir() / "fused" / manifest.model_id / f"{start}-{stop}-{key[:32]}.onnx"
    try:
        cached = cache.read_bytes()
        stamp = cache.with_suffix(".sha256").read_text().strip()
        if sha256_bytes(cached) == stamp:
            return cached
    except OSError:
        pass
    import onnx
    from onnx import compose

    merged = None
    for i, data in zip(range(start, stop), blocks):
        proto = compose.add_prefix(onnx.load_from_string(data), prefix=f"b{i}_")
        merged = proto if merged is None else compose.merge_models(
            merged, proto, io_map=[(merged.graph.output[0].name, proto.graph.input[0].name)])
    out = merged.SerializeToString()
    try:  # best effort: where the cache cannot be written, the range is merged again next time
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        tmp.write_bytes(out)
        cache.with_suffix(".sha256").write_text(sha256_bytes(out))
        tmp.replace(cache)
    except OSError:
        pass
    return out


def load_sessions(manifest: Manifest, start: int, stop: int, config: SessionConfig) -> list[tuple[str, str, ort.InferenceSession]]:
    """The sessions that run blocks ``[start, stop)``: one fused session (or none for an empty
    range), or one per block with ``config.fused`` off."""
    opts = config.session_options()
    if stop - start <= 1 or not config.fused:
        return [load_block_session(manifest, i, opts) for i in range(start, stop)]
    return [_session(fused_graph(manifest, start, stop), opts)]


class BlockRunner:
    """Any block range of one model, each block's session loaded (and verified) once, on first use.

    What a service uses: the edge and the cloud run a different ``[start, stop)`` per device.
    Inputs are checked by the caller (the codec checks shapes against the manifest).
    """

    def __init__(self, manifest: Manifest, config: SessionConfig | None = None):
        self.manifest = manifest
        self.config = config or SessionConfig()
        self._ranges: dict[tuple[int, int], list[tuple[str, str, ort.InferenceSession]]] = {}
        self._lock = threading.Lock()

    def sessions(self, start: int, stop: int) -> list[tuple[str, str, ort.InferenceSession]]:
        """The sessions of one range, built once (fused, see :func:`load_sessions`), on first use."""
        key = (start, stop)
        found = self._ranges.get(key)
        if found is None:
            with self._lock:  # worker threads: one build per range
                found = self._ranges.get(key)
                if found is None:
                    found = self._ranges[key] = load_sessions(self.manifest, start, stop, self.config)
        return found

    def run(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        if not (0 <= start <= stop <= self.manifest.n_blocks):
            raise SplitRangeError(f"block range [start, stop): got [{start}, {stop}) of {self.manifest.n_blocks}")
        for in_name, out_name, sess in self.sessions(start, stop):
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
        self._sessions = load_sessions(manifest, start, stop, config or SessionConfig())

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
