"""The download path (``ecd.distribution``): a model arrives in chunks and nothing is written or
loaded unless every file is the one announced and listed in a manifest that checks out.

Each test feeds the chunk writer what a broken or hostile cloud could send — a flipped byte, a
truncated file, chunks out of order, a file name that climbs out of the destination, a block the
manifest does not list, a manifest rewritten to vouch for a swapped block — and expects an
:class:`~ecd.errors.IntegrityError` (or :class:`~ecd.errors.ManifestError`) naming the file.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Iterator

import pytest

from ecd import distribution, zoo
from ecd.errors import IntegrityError, ManifestError
from ecd.manifest import MANIFEST_FILENAME, Manifest
from ecd.types import FileChunk, PartitionRequest


def chunks_of(name: str, data: bytes, step: int = 1000, sha: str | None = None, size: int | None = None) -> list[FileChunk]:
    """A file as the cloud sends it: pieces of ``step`` bytes, each carrying the file's sha256 and size."""
    sha = sha or hashlib.sha256(data).hexdigest()
    size = len(data) if size is None else size
    return [FileChunk(name, sha, size, off, data[off : off + step]) for off in range(0, max(len(data), 1), step)]


def model_files(src: Path) -> dict[str, bytes]:
    m = Manifest.load(src)
    files = {MANIFEST_FILENAME: (src / MANIFEST_FILENAME).read_bytes()}
    files.update({b.file: (src / b.file).read_bytes() for b in m.blocks})
    return files


def all_chunks(files: dict[str, bytes], step: int = 1000) -> list[FileChunk]:
    return [c for name, data in files.items() for c in chunks_of(name, data, step)]


@pytest.fixture
def files() -> dict[str, bytes]:
    return model_files(zoo.bundled_dir() / zoo.DEFAULT_MODEL)


def test_a_whole_model_arrives_byte_for_byte(tmp_path: Path, files: dict[str, bytes]) -> None:
    m = distribution.fetch(all_chunks(files), tmp_path / "dest")
    bundled = zoo.load_manifest(zoo.DEFAULT_MODEL)
    assert (m.model_id, m.version, m.n_blocks) == (bundled.model_id, bundled.version, bundled.n_blocks)
    assert m.directory == tmp_path / "dest"
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == sorted(files)
    for name, data in files.items():
        assert (tmp_path / "dest" / name).read_bytes() == data


def test_the_async_path_is_the_same(tmp_path: Path, files: dict[str, bytes]) -> None:
    async def stream() -> Iterator[FileChunk]:
        for c in all_chunks(files, step=4096):
            yield c

    m = asyncio.run(distribution.fetch_async(stream(), tmp_path))
    assert m.version == zoo.load_manifest(zoo.DEFAULT_MODEL).version
    assert (tmp_path / MANIFEST_FILENAME).read_bytes() == files[MANIFEST_FILENAME]


def test_only_a_manifest_is_enough_for_the_head(tmp_path: Path, files: dict[str, bytes]) -> None:
    m = distribution.fetch(chunks_of(MANIFEST_FILENAME, files[MANIFEST_FILENAME]), tmp_path)
    assert m.n_blocks == zoo.load_manifest(zoo.DEFAULT_MODEL).n_blocks
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_FILENAME]


def block_name(files: dict[str, bytes], k: int = 1) -> str:
    return [n for n in files if n != MANIFEST_FILENAME][k]


def test_a_flipped_byte_is_refused_and_not_written(tmp_path: Path, files: dict[str, bytes]) -> None:
    name = block_name(files)
    good = files[name]
    bad = good[:500] + bytes([good[500] ^ 0xFF]) + good[501:]
    chunks = [c for c in all_chunks(files) if c.file != name] + chunks_of(name, bad, sha=hashlib.sha256(good).hexdigest())
    with pytest.raises(IntegrityError, match=rf"^{name}: received {len(bad)} bytes that do not match the announced size/sha256$"):
        distribution.fetch(chunks, tmp_path)
    assert not (tmp_path / name).exists()


def test_a_truncated_file_is_refused(tmp_path: Path, files: dict[str, bytes]) -> None:
    name = block_name(files, 2)
    pieces = chunks_of(name, files[name])
    assert len(pieces) > 1
    chunks = [c for c in all_chunks(files) if c.file != name] + pieces[:-1]  # the last chunk never comes
    with pytest.raises(IntegrityError, match=rf"^{name}: received \d+ bytes that do not match the announced size/sha256$"):
        distribution.fetch(chunks, tmp_path)
    assert not (tmp_path / name).exists()


def test_a_file_longer_than_announced_is_refused(tmp_path: Path, files: dict[str, bytes]) -> None:
    name = MANIFEST_FILENAME
    data = files[name]
    # the sha256 is right for what is sent, the size is one byte short
    chunks = chunks_of(name, data, size=len(data) - 1)
    with pytest.raises(IntegrityError, match=rf"^{name}: received {len(data)} bytes"):
        distribution.fetch(chunks, tmp_path)


def test_chunks_out_of_order_are_refused(tmp_path: Path, files: dict[str, bytes]) -> None:
    name = block_name(files)
    pieces = chunks_of(name, files[name])
    writer = distribution.ChunkWriter(tmp_path)
    writer.add(pieces[0])
    with pytest.raises(IntegrityError, match=rf"^{name}: chunk at offset {pieces[2].offset}, expected {len(pieces[0].data)}$"):
        writer.add(pieces[2])
    writer2 = distribution.ChunkWriter(tmp_path / "again")
    writer2.add(pieces[0])
    with pytest.raises(IntegrityError, match="chunk at offset 0, expected 1000"):
        writer2.add(pieces[0])  # a repeated chunk would duplicate its bytes


@pytest.mark.parametrize("name", ["../evil.onnx", "../../etc/cron.d/x", "/tmp/abs.onnx", "sub/block.onnx", "", ".", ".."])
def test_a_file_name_that_is_a_path_is_refused(tmp_path: Path, name: str) -> None:
    dest = tmp_path / "models" / "dest"
    writer = distribution.ChunkWriter(dest)
    with pytest.raises(IntegrityError, match=r"^file: refusing chunk for "):
        writer.add(FileChunk(name, hashlib.sha256(b"x").hexdigest(), 1, 0, b"x"))
    assert list(tmp_path.rglob("*")) == []  # nothing written, not even the destination folder


def test_no_manifest_no_model(tmp_path: Path, files: dict[str, bytes]) -> None:
    chunks = [c for c in all_chunks(files) if c.file != MANIFEST_FILENAME]
    with pytest.raises(IntegrityError, match="^the cloud sent no manifest.json$"):
        distribution.fetch(chunks, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_file_the_manifest_does_not_list_is_refused(tmp_path: Path, files: dict[str, bytes]) -> None:
    m = Manifest.load(zoo.bundled_dir() / zoo.DEFAULT_MODEL)
    chunks = all_chunks(files) + chunks_of("extra.onnx", b"not a block")
    with pytest.raises(IntegrityError, match=rf"^extra.onnx: not a block of {m.model_id}@{m.version}$"):
        distribution.fetch(chunks, tmp_path)


def test_a_swapped_block_with_its_own_hash_is_refused(tmp_path: Path, files: dict[str, bytes]) -> None:
    """The chunk's sha256 matches what is sent, but not the manifest's entry for that block."""
    a, b = block_name(files, 0), block_name(files, 1)
    swapped = dict(files)
    swapped[a] = files[b]
    with pytest.raises(IntegrityError, match=rf"^{a}: not a block of "):
        distribution.fetch(all_chunks(swapped), tmp_path)


def test_a_rewritten_manifest_is_checked_when_loaded(tmp_path: Path, files: dict[str, bytes]) -> None:
    """A cloud that swaps a block *and* rewrites the manifest's sha256 for it (announcing the new
    manifest's own hash): the manifest's version no longer hashes its blocks, so loading refuses."""
    a, b = block_name(files, 0), block_name(files, 1)
    d = json.loads(files[MANIFEST_FILENAME])
    entry = next(x for x in d["blocks"] if x["file"] == a)
    entry["sha256"] = hashlib.sha256(files[b]).hexdigest()
    forged = dict(files)
    forged[a] = files[b]
    forged[MANIFEST_FILENAME] = json.dumps(d).encode()
    with pytest.raises(ManifestError, match=r"^version: .* is not the hash of the block files"):
        distribution.fetch(all_chunks(forged), tmp_path)


def test_a_manifest_that_is_not_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="is not valid JSON"):
        distribution.fetch(chunks_of(MANIFEST_FILENAME, b"{ not json"), tmp_path)


def test_request_leaves_room_for_the_chunk_fields() -> None:
    assert distribution.request("m", "v", 1, 3, 64 * 1024) == PartitionRequest("m", "v", 1, 3, 64 * 1024 - 4096)
    assert distribution.request("m", "", 0, 0, 4096).max_chunk_bytes == 1024  # never below 1 KiB
    assert distribution.request("m", "", 0, 0, 5121).max_chunk_bytes == 1025
