"""What a tier's onnxruntime sessions are built with, and what a manifest file loads into.

Issue 19 (mutation gate): the other tests compare two things built by the same code (a session run
against another session run, a manifest loaded against the same file loaded again), so they cannot
notice a session built without the tier's settings, or a manifest field read wrong on both sides.
These pin the settings and the values against hand-written expectations.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ecd import zoo
from ecd.manifest import MANIFEST_FILENAME, InputSpec, Manifest
from ecd.partition import BlockRunner, Partition, SessionConfig, load_block_session

SPIN_KEYS = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


@pytest.fixture
def m() -> Manifest:
    return zoo.load_manifest(zoo.DEFAULT_MODEL)


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, object, ort.InferenceSession]]:
    """Every InferenceSession the module creates: (the options and providers it was asked for, the session)."""
    made: list[tuple[object, object, ort.InferenceSession]] = []
    real = ort.InferenceSession

    def spy(data, sess_options=None, providers=None, **kw):
        sess = real(data, sess_options, providers=providers, **kw)
        made.append((sess_options, providers, sess))
        return sess

    monkeypatch.setattr(ort, "InferenceSession", spy)
    return made


@pytest.mark.parametrize("spin,value", [(False, "0"), (True, "1")])
def test_spinning_is_set_for_both_thread_pools(spin: bool, value: str) -> None:
    opts = SessionConfig(spin=spin).session_options()
    assert [opts.get_session_config_entry(k) for k in SPIN_KEYS] == [value, value]


def assert_built_as_configured(built, config: SessionConfig) -> None:
    assert built, "no session was built"
    for asked_options, providers, sess in built:
        assert asked_options is not None and providers == ["CPUExecutionProvider"]
        assert sess.get_providers() == ["CPUExecutionProvider"]
        got = sess.get_session_options()
        assert got.intra_op_num_threads == config.intra_op_threads == 1
        assert got.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        assert [got.get_session_config_entry(k) for k in SPIN_KEYS] == ["0", "0"]


CONFIG = SessionConfig(intra_op_threads=1, graph_optimization="disable")


def test_a_block_session_is_cpu_only_with_the_tiers_options(m: Manifest, built) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unknown provider name: onnxruntime warns and falls back
        load_block_session(m, 2, CONFIG.session_options())
    assert len(built) == 1
    assert_built_as_configured(built, CONFIG)


def test_a_partition_builds_its_sessions_with_the_tiers_options(m: Manifest, built) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = Partition(m, 1, 4, CONFIG)
    assert_built_as_configured(built, CONFIG)
    x = np.zeros((1, *m.activation_shape(1)), np.float32)
    assert p.run(x).shape == (1, *m.activation_shape(4))


def test_a_block_runner_builds_its_sessions_with_the_tiers_options(m: Manifest, built) -> None:
    runner = BlockRunner(m, CONFIG)
    assert not built  # nothing before the first frame
    x = np.zeros((1, *m.activation_shape(2)), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert runner.run(x, 2, 5).shape == (1, *m.activation_shape(5))
    assert_built_as_configured(built, CONFIG)


def test_a_batch_of_one_sample_is_accepted(m: Manifest) -> None:
    p = Partition(m, 0, m.n_blocks)
    x = np.zeros((1, *m.input.shape), np.float32)
    p.check_input(x)  # raises InputSpecError if refused
    assert p.run(x).shape == (1, *m.blocks[-1].output_shape)


# --- the manifest file ---------------------------------------------------------------------------


def test_the_loaded_manifest_holds_exactly_what_the_file_says(m: Manifest) -> None:
    raw = json.loads((m.directory / MANIFEST_FILENAME).read_text())
    assert m.to_dict() == raw  # every field, as written: nothing dropped, defaulted or renamed
    # and by hand, for the fields whose defaults would hide a field read wrong
    assert (m.input.dtype, m.input.layout, m.input.pixel_scale) == ("float32", "NCHW", raw["input"]["pixel_scale"])
    assert m.description.startswith("Small CNN") and m.labels == tuple(str(d) for d in range(10))
    assert [b.name for b in m.blocks] == [b["name"] for b in raw["blocks"]] and m.blocks[0].name
    assert [b.kind for b in m.blocks] == [b["kind"] for b in raw["blocks"]] and m.blocks[-1].kind == "classifier"
    assert m.privacy and m.privacy == raw["privacy"] and m.build["opset"] == 17


def test_non_default_input_fields_are_read(m: Manifest) -> None:
    d = m.to_dict()
    d["input"].update(dtype="float16", layout="NHWC", pixel_scale=0.5)
    back = Manifest.from_dict(d)
    assert (back.input.dtype, back.input.layout, back.input.pixel_scale) == ("float16", "NHWC", 0.5)
    assert back.input == InputSpec(shape=m.input.shape, dtype="float16", layout="NHWC", pixel_scale=0.5,
                                   mean=m.input.mean, std=m.input.std)


def test_a_written_manifest_is_the_shipped_file_byte_for_byte(m: Manifest, tmp_path: Path) -> None:
    """Two-space indented JSON and a final newline: a rebuilt model's manifest diffs cleanly."""
    written = m.write(tmp_path).read_text()
    assert written == (m.directory / MANIFEST_FILENAME).read_text()
    assert written.startswith('{\n  "schema": ')


# --- sessions built once, with the tier's options, however the range is run -----------------------


def test_unfused_and_one_block_sessions_get_the_tiers_options(m: Manifest, built) -> None:
    unfused = dataclasses.replace(CONFIG, fused=False)
    Partition(m, 1, 4, unfused)
    assert len(built) == 3  # a session per block
    assert_built_as_configured(built, CONFIG)
    built.clear()
    Partition(m, 2, 3, CONFIG)  # one block: nothing to fuse
    assert len(built) == 1
    assert_built_as_configured(built, CONFIG)


def test_concurrent_first_frames_build_a_range_once(m: Manifest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two worker threads reach a range nobody has run yet: one builds its sessions, the other waits and
    uses them (no sleeps: each step is signalled)."""
    import threading

    import ecd.partition as partition

    runner = BlockRunner(m, CONFIG)
    builds: list[tuple[int, int]] = []
    building, release, second_looked = threading.Event(), threading.Event(), threading.Event()
    real = partition.load_sessions

    def slow_build(*args):
        builds.append(args[1:3])
        building.set()
        assert release.wait(30)
        return real(*args)

    class WatchedLock:
        """The runner's lock, telling when a second thread arrives at it."""

        def __init__(self) -> None:
            self.lock, self.arrivals = threading.Lock(), 0

        def __enter__(self):
            self.arrivals += 1
            if self.arrivals == 2:
                second_looked.set()
            return self.lock.__enter__()

        def __exit__(self, *exc):
            return self.lock.__exit__(*exc)

    monkeypatch.setattr(partition, "load_sessions", slow_build)
    runner._lock = WatchedLock()
    got: list = []
    first = threading.Thread(target=lambda: got.append(runner.sessions(0, 3)))
    first.start()
    assert building.wait(30)
    second = threading.Thread(target=lambda: got.append(runner.sessions(0, 3)))
    second.start()
    assert second_looked.wait(30)  # it found nothing built and now waits for the lock
    release.set()
    first.join(30)
    second.join(30)
    assert builds == [(0, 3)] and len(got) == 2 and got[0] is got[1]


def test_a_fused_range_is_merged_once_and_then_loaded_from_the_cache(m: Manifest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restart (a new runner, same model directory) loads the merged graph without merging again."""
    from onnx import compose

    from ecd.partition import fused_graph

    first = fused_graph(m, 1, 5)

    def no_merge(*args, **kw):
        raise AssertionError("merged again: the cached graph was not used")

    monkeypatch.setattr(compose, "merge_models", no_merge)
    assert fused_graph(m, 1, 5) == first
    x = np.random.default_rng(0).standard_normal((2, *m.activation_shape(1))).astype(np.float32)
    assert np.array_equal(BlockRunner(m, CONFIG).run(x, 1, 5), Partition(m, 1, 5, dataclasses.replace(CONFIG, fused=False)).run(x))


def test_a_new_model_version_is_not_served_from_the_old_versions_cache(bundled_copy: Path) -> None:
    """Same model id, block 1 retrained (new weights, new sha256): the fused graph of a range that holds
    it is merged again, not loaded from the cache of the old version."""
    import onnx
    from onnx import numpy_helper

    from ecd.manifest import model_version, sha256_bytes

    old = Manifest.load(bundled_copy)
    x = np.random.default_rng(1).standard_normal((2, *old.input.shape)).astype(np.float32)
    before = Partition(old, 0, 3).run(x)  # fused and cached
    path = bundled_copy / old.blocks[1].file
    model = onnx.load_from_string(path.read_bytes())
    weights = max(model.graph.initializer, key=lambda t: numpy_helper.to_array(t).size)
    weights.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weights) * 2, weights.name))
    data = model.SerializeToString()
    path.write_bytes(data)
    blocks = list(old.blocks)
    blocks[1] = dataclasses.replace(blocks[1], sha256=sha256_bytes(data))
    new = dataclasses.replace(old, blocks=tuple(blocks), version=model_version([b.sha256 for b in blocks]))
    after = Partition(new, 0, 3).run(x)
    assert np.array_equal(after, Partition(new, 0, 3, SessionConfig(fused=False)).run(x))
    assert not np.allclose(after, before)


def test_a_manifest_without_build_information_loads_with_none(m: Manifest) -> None:
    d = m.to_dict()
    d.pop("build")  # optional: a hand-written manifest need not say how it was exported
    assert Manifest.from_dict(d).build == {}
