"""The models this cloud serves: their manifests, the blocks the cloud runs, the task heads on their
outputs, and the partitions devices and edge nodes download.

:class:`ServedModels` is the one writer of task heads (the registry row and the head in memory change
together in :meth:`ServedModels.add_head`) and the one place that turns a model id (and version)
from a request into a served model, with the error naming the field.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from cloud_server.heads import BUILTIN_HEAD, LinearHead, builtin_head, head_from_spec, make_head
from cloud_server.registry import Registry
from ecd.batching import BatchingConfig, DynamicBatcher
from ecd.config import MiB
from ecd.errors import ConfigError, EcdError, LimitError, PreconditionError, RequestError
from ecd.leakage import check_level, defence_table
from ecd.limits import MAX_HEAD_LABELS, MAX_HEADS_PER_MODEL, MIN_CHUNK_BYTES, check_name
from ecd.manifest import MANIFEST_FILENAME, Manifest, sha256_bytes
from ecd.partition import BlockRunner
from ecd.types import FileChunk, HeadSpec, PartitionRequest

log = logging.getLogger("ecd.cloud")

CHUNK_BYTES = 1 * MiB


@dataclass
class ServedModel:
    manifest: Manifest
    runner: BlockRunner
    heads: dict[str, LinearHead] = field(default_factory=dict)
    batcher: DynamicBatcher | None = None  # frames of every edge stream, batched per block range

    def run(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        return (self.batcher.run if self.batcher is not None else self.runner.run)(x, start, stop)


class ServedModels(Mapping[str, ServedModel]):
    """Model id -> :class:`ServedModel`, with the heads the registry keeps for each."""

    def __init__(self, registry: Registry, manifests: list[Manifest], batching: BatchingConfig | None = None):
        self.registry = registry
        self._by_id: dict[str, ServedModel] = {}
        for m in manifests:
            runner = BlockRunner(m)
            served = ServedModel(m, runner, {BUILTIN_HEAD: builtin_head(m.labels)}, DynamicBatcher(runner.run, batching))
            for spec in registry.heads(m.model_id):
                served.heads[spec["name"]] = head_from_spec(spec, len(m.labels))
            self._by_id[m.model_id] = served

    def __getitem__(self, model_id: str) -> ServedModel:
        return self._by_id[model_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def served(self, model_id: str, version: str = "", field_name: str = "model_id") -> ServedModel:
        """The model a request names; ``version`` (when given) must be the one served."""
        served = self._by_id.get(model_id)
        if served is None:
            raise PreconditionError(f"{field_name}: model {model_id!r} is not served here (serving: {', '.join(sorted(self._by_id))})")
        if version and version != served.manifest.version:
            raise PreconditionError(
                f"model_version: {model_id} version {version!r} is not served here (current: {served.manifest.version}); fetch the current partition",
            )
        return served

    def partition_chunks(self, req: PartitionRequest) -> Iterator[FileChunk]:
        """The manifest and blocks ``[start, stop)`` of a served model, in chunks of at most
        ``max_chunk_bytes`` (each carrying its file's digest, so the receiver checks every file)."""
        m = self.served(req.model_id, req.model_version).manifest
        if not req.start <= req.stop <= m.n_blocks:
            raise RequestError(f"start, stop: expected 0 <= start <= stop <= {m.n_blocks}, got [{req.start}, {req.stop})")
        if 0 < req.max_chunk_bytes < MIN_CHUNK_BYTES:
            raise RequestError(f"max_chunk_bytes: expected 0 (the server's default) or >= {MIN_CHUNK_BYTES}, got {req.max_chunk_bytes}")
        step = min(req.max_chunk_bytes or CHUNK_BYTES, CHUNK_BYTES)
        paths = [m.directory / MANIFEST_FILENAME] + [m.block_path(b) for b in m.blocks[req.start : req.stop]]
        for path in paths:
            data = path.read_bytes()
            digest = sha256_bytes(data)
            for offset in range(0, max(len(data), 1), step):
                yield FileChunk(path.name, digest, len(data), offset, data[offset : offset + step])

    def add_head(self, spec: HeadSpec) -> int:
        """Add (or replace) a task head; returns how many heads the model has now."""
        served = self.served(spec.model_id)
        if len(spec.labels) > MAX_HEAD_LABELS:
            raise LimitError(f"labels: at most {MAX_HEAD_LABELS} per head, got {len(spec.labels)}")
        for k, label in enumerate(spec.labels):
            check_name(label, f"labels[{k}]")
        if spec.name not in served.heads and len(served.heads) >= MAX_HEADS_PER_MODEL:
            raise LimitError(f"name: {spec.model_id} already has {len(served.heads)} heads (the limit); replace one instead")
        head = make_head(spec.name, spec.labels, spec.weight, spec.bias, spec.input, len(served.manifest.labels))
        self.registry.put_head(spec.model_id, head.name, head.to_spec())
        served.heads[head.name] = head
        log.info("[CloudServer.AddHead] %s on %s (%d labels)", head.name, spec.model_id, len(head.labels))
        return len(served.heads)

    def list_heads(self, model_id: str) -> list[HeadSpec]:
        served = self.served(model_id)
        return [
            HeadSpec(model_id, h.name, list(h.labels), h.weight.ravel().tolist(), h.bias.tolist(), h.input)
            for h in served.heads.values()
        ]


def load_models(names: list[str]) -> list[Manifest]:
    """The manifests of the models named, each followed by the models that run its privacy levels
    (a learned defence table's ``models``, issue 35): serving a model serves every level a device may
    decide on, so no device's level is refused for want of its blocks."""
    from ecd import zoo

    out: dict[str, Manifest] = {}
    for name in names:
        m = zoo.load_manifest(name)
        out.setdefault(m.model_id, m)
        table = defence_table(m)
        for level, level_id in enumerate(table.models if table is not None and table.learned else ()):
            if not level:
                continue
            level_manifest = out.get(level_id)  # named before its family: checked as that family's level all the same
            if level_manifest is None:  # a zoo name, never a path (a folder of that name here is not it)
                try:
                    level_manifest = Manifest.load(zoo.model_dir(level_id))
                except (EcdError, OSError) as e:
                    raise ConfigError(f"--models: {m.model_id} names {level_id!r} for its privacy level {level} "
                                      f"(privacy.defence.models), which cannot be served: {e}") from None
            out[level_id] = check_level(m, level, level_manifest)
    return list(out.values())
