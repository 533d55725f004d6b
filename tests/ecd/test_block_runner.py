"""``ecd.partition`` piece by piece: the onnxruntime options a tier gets, the sha256 check before a
block loads, ``BlockRunner`` (what the edge and the cloud run) against ``Partition``, and each
refusal with its message.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ecd import zoo
from ecd.errors import InputSpecError, IntegrityError, SplitRangeError
from ecd.manifest import Manifest
from ecd.partition import BlockRunner, Partition, SessionConfig, load_block_session


@pytest.fixture
def m() -> Manifest:
    return zoo.load_manifest(zoo.DEFAULT_MODEL)


def batch(m: Manifest, split: int, n: int = 2) -> np.ndarray:
    return np.random.default_rng(split).standard_normal((n, *m.activation_shape(split))).astype(np.float32)


@pytest.mark.parametrize(
    "name,level",
    [
        ("disable", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
        ("basic", ort.GraphOptimizationLevel.ORT_ENABLE_BASIC),
        ("extended", ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED),
        ("all", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
    ],
)
def test_session_options(name: str, level: ort.GraphOptimizationLevel) -> None:
    opts = SessionConfig(intra_op_threads=3, graph_optimization=name).session_options()
    assert opts.graph_optimization_level == level
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (3, 1)


def test_default_session_options() -> None:
    opts = SessionConfig().session_options()
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (0, 1)
    with pytest.raises(KeyError):
        SessionConfig(graph_optimization="fast").session_options()


def test_load_block_session_checks_the_file(m: Manifest, bundled_copy: Path) -> None:
    in_name, out_name, sess = load_block_session(m, 1, SessionConfig().session_options())
    assert in_name == sess.get_inputs()[0].name and out_name == sess.get_outputs()[0].name
    copy = Manifest.load(bundled_copy)
    path = bundled_copy / copy.blocks[2].file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=rf"^block file {path} has sha256 [0-9a-f]{{16}}…, manifest expects "
                                             rf"{copy.blocks[2].sha256[:16]}… \(corrupt or from another model version\)$"):
        load_block_session(copy, 2, SessionConfig().session_options())
    path.unlink()
    with pytest.raises(IntegrityError, match=rf"^block file missing: {path}$"):
        load_block_session(copy, 2, SessionConfig().session_options())


@pytest.mark.parametrize("start,stop", [(0, 0), (0, 2), (1, 4), (3, 6), (0, 6), (5, 6)])
def test_block_runner_equals_partition(m: Manifest, start: int, stop: int) -> None:
    x = batch(m, start)
    runner = BlockRunner(m)
    got = runner.run(x, start, stop)
    want = Partition(m, start, stop).run(x)
    assert got.shape == (2, *m.activation_shape(stop)) and np.array_equal(got, want)
    if start == stop:
        assert got is x  # nothing to run: the input itself


def test_block_runner_loads_each_block_once(m: Manifest, bundled_copy: Path) -> None:
    copy = Manifest.load(bundled_copy)
    runner = BlockRunner(copy, SessionConfig(graph_optimization="basic"))
    first = runner.run(batch(copy, 1), 1, 3)
    for b in copy.blocks[:2]:
        (bundled_copy / b.file).unlink()  # block 1 was loaded and verified: it is not read again
    assert np.array_equal(runner.run(batch(copy, 1), 1, 3), first)
    with pytest.raises(IntegrityError, match="block file missing"):
        runner.run(batch(copy, 0), 0, 1)  # block 0 was never loaded


@pytest.mark.parametrize("start,stop", [(-1, 2), (3, 2), (0, 7)])
def test_block_runner_refuses_a_bad_range(m: Manifest, start: int, stop: int) -> None:
    with pytest.raises(SplitRangeError, match=rf"^block range \[start, stop\): got \[{start}, {stop}\) of 6$"):
        BlockRunner(m).run(batch(m, 0), start, stop)


@pytest.mark.parametrize("start,stop", [(-1, 2), (3, 2), (0, 7)])
def test_partition_refuses_a_bad_range(m: Manifest, start: int, stop: int) -> None:
    with pytest.raises(SplitRangeError, match=rf"^block range \[start, stop\): expected 0 <= start <= stop <= 6, got \[{start}, {stop}\)$"):
        Partition(m, start, stop)


def test_partition_shapes_and_repr(m: Manifest) -> None:
    p = Partition(m, 2, 5)
    assert p.input_shape == m.activation_shape(2) and p.output_shape == m.activation_shape(5)
    assert (p.start, p.stop, p.manifest) == (2, 5, m)
    assert repr(p) == f"Partition(digits_cnn@{m.version}, [2, 5))"
    assert Partition(m, 0, 6).run(batch(m, 0)).shape == (2, 10)


def test_partition_checks_its_input(m: Manifest) -> None:
    p = Partition(m, 1, 3)
    shape = ", ".join(map(str, m.activation_shape(1)))
    with pytest.raises(InputSpecError, match=r"^input: expected numpy.ndarray, got list$"):
        p.run([[1.0]])  # type: ignore[arg-type]
    with pytest.raises(InputSpecError, match=r"^input dtype: expected float32, got float64$"):
        p.run(batch(m, 1).astype(np.float64))
    for bad in (np.zeros((0, *m.activation_shape(1)), np.float32), np.zeros(m.activation_shape(1), np.float32),
                np.zeros((1, *m.activation_shape(2)), np.float32)):
        message = f"input shape: expected [N, {shape}] (blocks [1, 3) of digits_cnn), got {list(bad.shape)}"
        with pytest.raises(InputSpecError, match=f"^{re.escape(message)}$"):
            p.run(bad)


def test_partition_verifies_its_blocks_when_built(m: Manifest, bundled_copy: Path) -> None:
    copy = Manifest.load(bundled_copy)
    (bundled_copy / copy.blocks[4].file).unlink()
    Partition(copy, 0, 4)  # blocks it does not run are not read
    with pytest.raises(IntegrityError, match="block file missing"):
        Partition(copy, 3, 5)
    assert dataclasses.replace(copy).n_blocks == 6
