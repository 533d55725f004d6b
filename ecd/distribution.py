"""Assemble a model's manifest and block files from the chunks the cloud sends
(``CloudServer.FetchPartition``) and verify every file's sha256 before anything loads it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import AsyncIterable, Iterable

from ecd.errors import IntegrityError
from ecd.manifest import MANIFEST_FILENAME, Manifest
from ecd.types import FileChunk, PartitionRequest


class ChunkWriter:
    """Assembles FileChunks into files under ``dest``; ``finish`` verifies sizes and hashes."""

    def __init__(self, dest: Path):
        self.dest = Path(dest)  # created only once every file has checked out: a refused fetch leaves nothing
        self._files: dict[str, tuple[str, int, bytearray]] = {}

    def add(self, chunk: FileChunk) -> None:
        name = Path(chunk.file).name  # never a path from the wire
        if name != chunk.file or name in ("", ".", ".."):
            raise IntegrityError(f"file: refusing chunk for {chunk.file!r}")
        sha, size, buf = self._files.setdefault(name, (chunk.sha256, chunk.size, bytearray()))
        if chunk.offset != len(buf):
            raise IntegrityError(f"{name}: chunk at offset {chunk.offset}, expected {len(buf)}")
        buf.extend(chunk.data)

    def finish(self) -> Manifest:
        if MANIFEST_FILENAME not in self._files:
            raise IntegrityError("the cloud sent no manifest.json")
        for name, (sha, size, buf) in self._files.items():
            if len(buf) != size or hashlib.sha256(buf).hexdigest() != sha:
                raise IntegrityError(f"{name}: received {len(buf)} bytes that do not match the announced size/sha256")
        self.dest.mkdir(parents=True, exist_ok=True)
        for name, (_, _, buf) in self._files.items():
            (self.dest / name).write_bytes(bytes(buf))
        manifest = Manifest.load(self.dest)
        for name in self._files:
            if name != MANIFEST_FILENAME and not any(b.file == name and b.sha256 == self._files[name][0] for b in manifest.blocks):
                raise IntegrityError(f"{name}: not a block of {manifest.model_id}@{manifest.version}")
        return manifest


CHUNK_HEADROOM_BYTES = 4096  # the chunk message's other fields


def request(model_id: str, version: str, start: int, stop: int, max_message_bytes: int) -> PartitionRequest:
    """Ask for chunks that fit the caller's own receive limit."""
    return PartitionRequest(model_id, version, start, stop, max(max_message_bytes - CHUNK_HEADROOM_BYTES, 1024))


def fetch(chunks: Iterable[FileChunk], dest: Path) -> Manifest:
    writer = ChunkWriter(dest)
    for chunk in chunks:
        writer.add(chunk)
    return writer.finish()


async def fetch_async(chunks: AsyncIterable[FileChunk], dest: Path) -> Manifest:
    writer = ChunkWriter(dest)
    async for chunk in chunks:
        writer.add(chunk)
    return writer.finish()
