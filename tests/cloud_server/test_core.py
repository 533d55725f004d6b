"""The cloud core without gRPC: what it serves of a model and what it checks on a frame, exactly.

The integration tests reach these through the servicer and look at a status and a field name; here
each chunk, limit and refusal is checked on the core, where a mutation cannot hide behind a
transport retry or a message that another check would have produced anyway. The control plane
(registration, leases, edge ownership, placement, campaigns, heads) is checked the same way, on a
clock the test moves, with the scheduler metrics read back from their Prometheus registry.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from cloud_server.core import CloudCore
from cloud_server.crowdsensing import campaign_report_from_dict
from cloud_server.devices import parse_profile
from cloud_server.live_placement import placement_report_from_dict
from cloud_server.served import CHUNK_BYTES, ServedModel, load_models
from cloud_server.registry import Registry
from ecd import distribution, zoo
from ecd.batching import DynamicBatcher
from ecd.errors import (
    ConfigError,
    PreconditionError,
    RequestError,
)
from ecd.limits import (
    MIN_CHUNK_BYTES,
)
from ecd.leakage import DefenceTableError
from ecd.manifest import MANIFEST_FILENAME, load_heldout
from ecd.partition import BlockRunner, Partition
from ecd.profiles import (
    device_to_toml,
    known_devices,
    load_device,
)
from ecd.scheduler_types import (
    CampaignReport,
    DevicePlacement,
    DeviceQuality,
    DeviceTasks,
    EdgePlacement,
    PlacementReport,
)
from ecd.types import (
    EdgeRegistration,
    PartitionRequest,
    Position,
    Split,
    Task,
)

from cloud_core_harness import M, N, campaign_spec, frame, register


# --- partitions --------------------------------------------------------------------------------


def test_a_head_request_gets_the_manifest_only(core: CloudCore) -> None:
    chunks = list(core.models.partition_chunks(PartitionRequest(M.model_id, M.version, 0, 0)))
    data = (M.directory / MANIFEST_FILENAME).read_bytes()
    assert [c.file for c in chunks] == [MANIFEST_FILENAME] and chunks[0].data == data
    assert (chunks[0].size, chunks[0].offset) == (len(data), 0)


def test_blocks_come_in_chunks_of_the_callers_size(core: CloudCore, tmp_path: Path) -> None:
    chunks = list(core.models.partition_chunks(PartitionRequest(M.model_id, "", 1, 3, 5000)))
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
        chunks = [c for c in core.models.partition_chunks(PartitionRequest(M.model_id, "", i, i + 1, asked)) if c.file == big.file]
        assert max(len(c.data) for c in chunks) == min(size, CHUNK_BYTES)
        assert len(chunks) == -(-size // CHUNK_BYTES)


@pytest.mark.parametrize("start,stop", [(3, 2), (0, M.n_blocks + 1), (M.n_blocks + 1, M.n_blocks + 1)])
def test_a_bad_block_range_is_refused(core: CloudCore, start: int, stop: int) -> None:
    with pytest.raises(RequestError, match=rf"^start, stop: expected 0 <= start <= stop <= {M.n_blocks}, got \[{start}, {stop}\)$"):
        list(core.models.partition_chunks(PartitionRequest(M.model_id, "", start, stop)))


def test_the_whole_model_and_only_its_version(core: CloudCore) -> None:
    chunks = list(core.models.partition_chunks(PartitionRequest(M.model_id, M.version, 0, M.n_blocks)))
    assert {c.file for c in chunks} == {MANIFEST_FILENAME, *(b.file for b in M.blocks)}
    with pytest.raises(PreconditionError, match=r"^model_version: digits_cnn version '0+' is not served here"):
        list(core.models.partition_chunks(PartitionRequest(M.model_id, "0" * 16, 0, 0)))
    with pytest.raises(PreconditionError, match=r"^model_id: model 'lenet' is not served here \(serving: digits_cnn\)$"):
        list(core.models.partition_chunks(PartitionRequest("lenet", "", 0, 0)))


def test_a_model_not_served_is_refused_naming_every_model_served(tmp_path: Path) -> None:
    core = CloudCore(Registry(str(tmp_path / "r.sqlite3")), load_models(["orl_faces_cnn_level1", "digits_cnn"]))
    with pytest.raises(PreconditionError, match=r"^model_id: model 'lenet' is not served here \(serving: digits_cnn, orl_faces_cnn_level1\)$"):
        core.models.served("lenet")


# --- the data plane -----------------------------------------------------------------------------


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



# --- the data plane's remaining checks -----------------------------------------------------------


def test_a_frame_is_held_to_the_cores_batch_limit(tmp_path: Path) -> None:
    c = CloudCore(Registry(str(tmp_path / "r.sqlite3")), [M], max_batch=1)
    c.edges.register(EdgeRegistration("127.0.0.1:1", 10.0))
    a = register(c)
    x = M.input.preprocess(load_heldout(M).images[:2])
    r = c.process(frame(a, Split(2, 4), x))
    assert not r.ok and r.error.status == "RESOURCE_EXHAUSTED" and r.error.message == "tensor.shape[0]: a batch of 2 exceeds the limit of 1 (max_batch)"
    assert c.process(frame(a, Split(2, 4), x[:1])).ok


def test_a_served_model_runs_through_its_batcher_when_it_has_one() -> None:
    runner = BlockRunner(M)
    x = M.input.preprocess(load_heldout(M).images[:1])
    batcher = DynamicBatcher(runner.run)
    with_batcher = ServedModel(M, runner, batcher=batcher)
    assert np.allclose(with_batcher.run(x, 0, N), runner.run(x, 0, N)) and batcher.stats.frames == 1
    plain = ServedModel(M, runner)
    assert np.allclose(plain.run(x, 0, N), runner.run(x, 0, N)) and plain.batcher is None


@pytest.mark.parametrize("size", [1, MIN_CHUNK_BYTES - 1])
def test_a_chunk_size_below_the_minimum_is_refused(core: CloudCore, size: int) -> None:
    with pytest.raises(RequestError, match=rf"^max_chunk_bytes: expected 0 \(the server's default\) or >= {MIN_CHUNK_BYTES}, got {size}$"):
        list(core.models.partition_chunks(PartitionRequest(M.model_id, "", 0, 0, size)))
    assert list(core.models.partition_chunks(PartitionRequest(M.model_id, "", 0, 0, MIN_CHUNK_BYTES)))


# --- records and profiles ------------------------------------------------------------------------


def test_profiles_are_a_shipped_name_or_measured_toml() -> None:
    assert parse_profile("pi4") == load_device("pi4")
    measured = dataclasses.replace(load_device("pi4"), name="mine")
    assert parse_profile(device_to_toml(measured)) == measured
    with pytest.raises(RequestError, match="^" + re.escape(f"profile: neither a known profile ({', '.join(known_devices())}) nor profile TOML") + "$"):
        parse_profile("= =")
    with pytest.raises(RequestError, match=r"^profile: device profile in the request: missing field 'ram_mb'$"):
        parse_profile(device_to_toml(measured).replace("ram_mb = ", "ram = "))
    assert [m.model_id for m in load_models(["digits_cnn"])] == ["digits_cnn"]


def test_a_model_is_served_with_its_learned_levels_each_once() -> None:
    """Serving a model serves the models its learned defence table names for its privacy levels
    (issue 35) after it, each once, whatever order the names come in; a noise table names none."""
    family = ["orl_faces_cnn", "orl_faces_cnn_level1", "orl_faces_cnn_level2", "orl_faces_cnn_level3"]
    served = load_models(["orl_faces_cnn_level2", "orl_faces_cnn", "digits_cnn"])
    assert [m.model_id for m in served] == [family[2], family[0], family[1], family[3], "digits_cnn"]
    assert [m.model_id for m in load_models(["digits_cnn", "orl_faces_cnn"])] == ["digits_cnn", *family]


def test_a_level_that_cannot_be_served_is_named_with_its_family(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECD_MODEL_DIR", str(tmp_path))
    (tmp_path / "orl_faces_cnn_level3" / MANIFEST_FILENAME).mkdir(parents=True)  # a manifest that cannot be read
    with pytest.raises(ConfigError, match=r"^--models: orl_faces_cnn names 'orl_faces_cnn_level3' for its privacy level 3 "
                                          r"\(privacy\.defence\.models\), which cannot be served: \[Errno 21\] Is a directory"):
        load_models(["digits_cnn", "orl_faces_cnn"])


@pytest.mark.parametrize("names", [["orl_faces_cnn"], ["orl_faces_cnn_level2", "orl_faces_cnn"], ["PATH", "orl_faces_cnn"]])
def test_a_level_marked_as_another_is_refused_even_when_named_before_its_family(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                                names: list[str]) -> None:
    """A rebuilt level 2 that says it is level 3: serving it would hand the family's level-2 devices
    another defence. Named on its own before its family, it was served unchecked; named by its
    folder's path, that folder is the one checked (and served), not the zoo's level 2."""
    if names[0] == "PATH":
        names = [str(tmp_path / "orl_faces_cnn_level2"), *names[1:]]
    else:
        monkeypatch.setenv("ECD_MODEL_DIR", str(tmp_path))
    folder = shutil.copytree(zoo.model_dir("orl_faces_cnn_level2"), tmp_path / "orl_faces_cnn_level2")
    manifest = json.loads((folder / MANIFEST_FILENAME).read_text())
    manifest["privacy"]["privacy_level"]["level"] = 3
    (folder / MANIFEST_FILENAME).write_text(json.dumps(manifest))
    with pytest.raises(DefenceTableError, match=r"^privacy\.defence\.models\[2\] of 'orl_faces_cnn': 'orl_faces_cnn_level2' is not "
                                          r"level 2 of 'orl_faces_cnn' \(its privacy\.privacy_level: 'orl_faces_cnn', 3\)$"):
        load_models(names)


def test_stored_reports_read_back_equal() -> None:
    p = PlacementReport(3, "otacs", "edge lost", 9.5, 4.0, 5.5, 0.01, 123,
                        [EdgePlacement("e1", "h:1", Position(1.0, 2.0), True, True, 2, 5.0), EdgePlacement("e2", "h:2", None, False, False, 0, 1.0)],
                        [DevicePlacement("d1", "one", "e1", Position(1.5, 2.5), 0.25), DevicePlacement("d2", "two", "e1", None, 0.0)], "{}")
    assert placement_report_from_dict(json.loads(json.dumps(dataclasses.asdict(p)))) == p
    c = CampaignReport("c1", campaign_spec(), "done", 4, 4, 3, 2, 1, 7.5, 0.2,
                       allocation=[DeviceTasks("d1", "one", [Task("c1", 0, 1, 0), Task("c1", 1, 0, 1)], 0.5, True)],
                       results=4, quality=[DeviceQuality("d1", "one", 2, 0.9, 2.1, 0)], excluded=["d9"], coverage=1, cells=2,
                       objective=0.5, latency_s=0.1)
    assert campaign_report_from_dict(json.loads(json.dumps(dataclasses.asdict(c)))) == c
