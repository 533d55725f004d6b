"""The cloud core without gRPC: what it serves of a model and what it checks on a frame, exactly.

The integration tests reach these through the servicer and look at a status and a field name; here
each chunk, limit and refusal is checked on the core, where a mutation cannot hide behind a
transport retry or a message that another check would have produced anyway.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cloud_server.core import CHUNK_BYTES, CloudCore
from cloud_server.registry import Registry
from ecd import codec, distribution, zoo
from ecd.errors import PreconditionError, RequestError
from ecd.manifest import MANIFEST_FILENAME, load_heldout
from ecd.partition import Partition
from ecd.split import Preferences
from ecd.types import DeviceRegistration, EdgeRegistration, Encoding, Frame, PartitionRequest, Split

M = zoo.load_manifest("digits_cnn")


@pytest.fixture
def core(tmp_path: Path) -> CloudCore:
    c = CloudCore(Registry(tmp_path / "r.sqlite3"), [M])
    c.register_edge(EdgeRegistration("127.0.0.1:1", 10.0))
    return c


def register(core: CloudCore, split: int = 2, min_split: int = 0):
    return core.register_device(DeviceRegistration("d", "pi4", "wifi", Preferences(1.0, 1.0, min_split), M.model_id, split, Encoding.FLOAT32))


# --- partitions --------------------------------------------------------------------------------


def test_a_head_request_gets_the_manifest_only(core: CloudCore) -> None:
    chunks = list(core.partition_chunks(PartitionRequest(M.model_id, M.version, 0, 0)))
    data = (M.directory / MANIFEST_FILENAME).read_bytes()
    assert [c.file for c in chunks] == [MANIFEST_FILENAME] and chunks[0].data == data
    assert (chunks[0].size, chunks[0].offset) == (len(data), 0)


def test_blocks_come_in_chunks_of_the_callers_size(core: CloudCore, tmp_path: Path) -> None:
    chunks = list(core.partition_chunks(PartitionRequest(M.model_id, "", 1, 3, 5000)))
    names = [b.file for b in M.blocks[1:3]]
    assert sorted({c.file for c in chunks}) == sorted([MANIFEST_FILENAME, *names])
    assert all(len(c.data) <= 5000 for c in chunks)
    for name in names:
        mine = [c for c in chunks if c.file == name]
        data = (M.directory / name).read_bytes()
        assert [c.offset for c in mine] == list(range(0, len(data), 5000))
        assert b"".join(c.data for c in mine) == data and all(c.size == len(data) for c in mine)
    got = distribution.fetch(chunks, tmp_path / "copy")  # the chunks assemble and verify
    assert got.version == M.version


def test_the_chunk_size_defaults_to_and_is_capped_at_one_mib(core: CloudCore) -> None:
    big = max(M.blocks, key=lambda b: (M.directory / b.file).stat().st_size)
    i = M.blocks.index(big)
    size = (M.directory / big.file).stat().st_size
    for asked in (0, CHUNK_BYTES * 4):
        chunks = [c for c in core.partition_chunks(PartitionRequest(M.model_id, "", i, i + 1, asked)) if c.file == big.file]
        assert max(len(c.data) for c in chunks) == min(size, CHUNK_BYTES)
        assert len(chunks) == -(-size // CHUNK_BYTES)


@pytest.mark.parametrize("start,stop", [(3, 2), (0, M.n_blocks + 1), (M.n_blocks + 1, M.n_blocks + 1)])
def test_a_bad_block_range_is_refused(core: CloudCore, start: int, stop: int) -> None:
    with pytest.raises(RequestError, match=rf"^start, stop: expected 0 <= start <= stop <= {M.n_blocks}, got \[{start}, {stop}\)$"):
        list(core.partition_chunks(PartitionRequest(M.model_id, "", start, stop)))


def test_the_whole_model_and_only_its_version(core: CloudCore) -> None:
    chunks = list(core.partition_chunks(PartitionRequest(M.model_id, M.version, 0, M.n_blocks)))
    assert {c.file for c in chunks} == {MANIFEST_FILENAME, *(b.file for b in M.blocks)}
    with pytest.raises(PreconditionError, match=r"^model_version: digits_cnn version '0+' is not served here"):
        list(core.partition_chunks(PartitionRequest(M.model_id, "0" * 16, 0, 0)))
    with pytest.raises(PreconditionError, match=r"^model_id: model 'lenet' is not served here \(serving: digits_cnn\)$"):
        list(core.partition_chunks(PartitionRequest("lenet", "", 0, 0)))


# --- the data plane -----------------------------------------------------------------------------


def frame(a, split: Split, x: np.ndarray | None = None, frame_id: int = 1) -> Frame:
    x = M.input.preprocess(load_heldout(M).images[:1]) if x is None else x
    act = Partition(M, 0, split.edge).run(x)
    return Frame(a.device_id, frame_id, a.token, a.model_id, a.model_version, split, codec.encode(act),
                 device_compute_s=0.25, edge_compute_s=0.5, uplink_bytes=123, wire_bytes=77)


def test_a_good_frame_gets_every_head_and_its_timings(core: CloudCore) -> None:
    a = register(core)
    x = M.input.preprocess(load_heldout(M).images[:1])
    r = core.process(frame(a, Split(2, 4), x))
    assert r.ok and r.error is None
    want = Partition(M, 0, M.n_blocks).run(x)[0]
    assert np.allclose(r.output, want, atol=1e-4)
    head = r.head("class")
    assert head.index == int(np.argmax(want)) and head.label == M.labels[head.index] and len(head.scores) == len(M.labels)
    assert (r.device_id, r.frame_id, r.split) == (a.device_id, 1, Split(2, 4))
    assert (r.device_compute_s, r.edge_compute_s, r.uplink_bytes, r.edge_to_cloud_bytes) == (0.25, 0.5, 123, 77)
    assert r.cloud_compute_s > 0


@pytest.mark.parametrize("split,field", [(Split(2, 1), "split_edge"), (Split(2, M.n_blocks + 1), "split_edge")])
def test_a_split_edge_out_of_range_is_refused(core: CloudCore, split: Split, field: str) -> None:
    a = register(core)
    f = frame(a, Split(2, 2))
    f.split = split
    r = core.process(f)
    assert not r.ok and r.error.status == "INVALID_ARGUMENT"
    assert r.error.message == f"split_edge: expected 2..{M.n_blocks}, got {split.edge}"
    assert r.heads == []


def test_the_split_edge_may_be_the_last_block(core: CloudCore) -> None:
    a = register(core)
    r = core.process(frame(a, Split(2, M.n_blocks)))
    assert r.ok and r.head("class") is not None


def test_the_floor_and_the_token_are_checked_again(core: CloudCore) -> None:
    a = register(core, split=3, min_split=3)
    low = frame(a, Split(1, 4))
    r = core.process(low)
    assert r.error.status == "FAILED_PRECONDITION" and "min_split" in r.error.message
    f = frame(a, Split(3, 4))
    f.token = "x"
    r = core.process(f)
    assert r.error.status == "UNAUTHENTICATED" and r.error.message == f"token: unknown device token for device_id {a.device_id!r}"
    f.token = ""
    assert core.process(f).error.status == "UNAUTHENTICATED"
    f.token, f.device_id = a.token, ""
    assert core.process(f).error.status == "UNAUTHENTICATED"
