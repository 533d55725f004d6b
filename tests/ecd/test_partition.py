from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ecd import zoo
from ecd.errors import (
    InputSpecError,
    IntegrityError,
    ManifestError,
    ModelNotBuiltError,
    SplitRangeError,
    UnknownModelError,
)
from ecd.manifest import Manifest, load_heldout
from ecd.partition import Partition
from ecd.splitcheck import check_inputs, check_splits


def test_bundled_model_every_split_matches_torch_logits(bundled: Manifest) -> None:
    """The committed ONNX blocks, split anywhere, reproduce the torch model's held-out logits."""
    inputs = check_inputs(bundled)
    assert inputs.reference_name == "torch"
    assert len(inputs.x) >= 300
    results = check_splits(bundled, inputs)
    assert [r.split for r in results] == list(range(bundled.n_blocks + 1))
    for r in results:
        assert r.rel_max_abs_diff <= 1e-4, r
        assert r.argmax_agreement == 1.0, r
    assert results[0].accuracy >= 0.95


def test_bundled_manifest_describes_its_blocks(bundled: Manifest) -> None:
    assert bundled.n_blocks >= 5
    assert bundled.input.shape == (1, 32, 32)
    assert len(bundled.labels) == 10
    assert bundled.training["heldout_accuracy"] >= 0.95
    for b in bundled.blocks:
        assert b.output_bytes_float32 == 4 * int(np.prod(b.output_shape))
        assert b.macs >= 0 and b.params >= 0
        assert len(b.sha256) == 64
    assert bundled.blocks[-1].output_shape == (10,)


def test_partition_output_shape_and_empty_partition_is_identity(bundled: Manifest) -> None:
    x = np.random.default_rng(0).standard_normal((3, *bundled.activation_shape(2))).astype(np.float32)
    assert np.array_equal(Partition(bundled, 2, 2).run(x), x)
    y = Partition(bundled, 2, 4).run(x)
    assert y.shape == (3, *bundled.activation_shape(4))


def test_wrong_input_shape_names_expected_and_got(bundled: Manifest) -> None:
    part = Partition(bundled, 1, 3)
    bad = np.zeros((2, 1, 32, 32), dtype=np.float32)
    with pytest.raises(InputSpecError) as e:
        part.run(bad)
    assert "expected [N, 16, 32, 32]" in str(e.value)
    assert "got [2, 1, 32, 32]" in str(e.value)


def test_wrong_input_dtype_names_expected_and_got(bundled: Manifest) -> None:
    part = Partition(bundled, 0, 2)
    with pytest.raises(InputSpecError, match="expected float32, got float64"):
        part.run(np.zeros((1, 1, 32, 32), dtype=np.float64))
    with pytest.raises(InputSpecError, match="expected numpy.ndarray, got list"):
        part.run([[0.0]])  # type: ignore[arg-type]


@pytest.mark.parametrize("start,stop", [(-1, 2), (3, 2), (0, 7)])
def test_block_range_out_of_bounds(bundled: Manifest, start: int, stop: int) -> None:
    with pytest.raises(SplitRangeError, match=r"0 <= start <= stop <= 6"):
        Partition(bundled, start, stop)


def test_tampered_block_file_is_refused_naming_the_file(bundled_copy: Path) -> None:
    manifest = Manifest.load(bundled_copy)
    victim = bundled_copy / manifest.blocks[2].file
    victim.write_bytes(victim.read_bytes() + b"\0")
    Partition(manifest, 0, 2)  # blocks before the tampered one still load
    with pytest.raises(IntegrityError) as e:
        Partition(manifest, 0, 3)
    assert manifest.blocks[2].file in str(e.value)


def test_missing_block_file_is_refused_naming_the_file(bundled_copy: Path) -> None:
    manifest = Manifest.load(bundled_copy)
    (bundled_copy / manifest.blocks[4].file).unlink()
    with pytest.raises(IntegrityError, match=manifest.blocks[4].file):
        Partition(manifest, 4, 6)


def test_manifest_version_must_be_the_hash_of_its_blocks(bundled_copy: Path) -> None:
    path = bundled_copy / "manifest.json"
    d = json.loads(path.read_text())
    d["blocks"][0]["sha256"] = "0" * 64
    path.write_text(json.dumps(d))
    with pytest.raises(ManifestError, match="version"):
        Manifest.load(bundled_copy)


def test_manifest_missing_field_and_wrong_schema(bundled_copy: Path) -> None:
    path = bundled_copy / "manifest.json"
    d = json.loads(path.read_text())
    del d["blocks"][1]["output_shape"]
    path.write_text(json.dumps(d))
    with pytest.raises(ManifestError, match="output_shape"):
        Manifest.load(bundled_copy)
    d["schema"] = "ecd.manifest/99"
    path.write_text(json.dumps(d))
    with pytest.raises(ManifestError, match="schema"):
        Manifest.load(bundled_copy)


def test_manifest_round_trips_through_json(bundled: Manifest, tmp_path: Path) -> None:
    again = Manifest.from_dict(json.loads(json.dumps(bundled.to_dict())), directory=bundled.directory)
    assert again == bundled


def test_heldout_set_is_verified(bundled: Manifest, bundled_copy: Path) -> None:
    held = load_heldout(bundled)
    assert held.images.dtype == np.uint8 and held.images.shape[1:] == (32, 32)
    assert len(held.labels) == len(held.torch_logits) == bundled.heldout["n"]
    (bundled_copy / "heldout.npz").write_bytes(b"not the held-out set")
    with pytest.raises(IntegrityError, match="heldout.npz"):
        load_heldout(Manifest.load(bundled_copy))


def test_unknown_model_lists_known_models() -> None:
    with pytest.raises(UnknownModelError) as e:
        zoo.load_manifest("lenet9000")
    for name in ("digits_cnn", "mobilenet_v2", "resnet18", "alexnet"):
        assert name in str(e.value)


def test_unbuilt_model_says_how_to_build_it() -> None:
    with pytest.raises(ModelNotBuiltError, match="ecd models build resnet18"):
        zoo.load_manifest("resnet18")


def test_preprocess_checks_image_shape(bundled: Manifest) -> None:
    with pytest.raises(ManifestError, match=r"expected C x H x W = \[1, 32, 32\], got \[3, 32, 32\]"):
        bundled.input.preprocess(np.zeros((2, 32, 32, 3), dtype=np.uint8))


def test_a_fused_session_equals_the_chained_blocks_for_every_range(bundled, isolated_model_dir) -> None:
    """One merged graph per range (what a tier runs) against one session per block."""
    from ecd.partition import SessionConfig

    n = bundled.n_blocks
    rng = np.random.default_rng(0)
    for start in range(n):
        x = rng.standard_normal((3, *bundled.activation_shape(start))).astype(np.float32)
        for stop in range(start + 2, n + 1):
            fused = Partition(bundled, start, stop)
            assert len(fused._sessions) == 1, (start, stop)
            chained = Partition(bundled, start, stop, SessionConfig(fused=False))
            assert len(chained._sessions) == stop - start
            np.testing.assert_allclose(fused.run(x), chained.run(x), rtol=1e-5, atol=1e-5, err_msg=f"[{start}, {stop})")
    cached = sorted((isolated_model_dir / "fused" / bundled.model_id).glob("*.onnx"))
    assert len(cached) == n * (n - 1) // 2  # every range of two blocks or more, once


def test_a_tampered_fused_cache_is_rebuilt_and_a_tampered_block_refused(bundled_copy, isolated_model_dir) -> None:
    from ecd.errors import IntegrityError
    from ecd.manifest import Manifest

    m = Manifest.load(bundled_copy)
    x = np.random.default_rng(1).standard_normal((1, *m.activation_shape(0))).astype(np.float32)
    want = Partition(m, 0, m.n_blocks).run(x)
    (cached,) = (isolated_model_dir / "fused" / m.model_id).glob("*.onnx")
    cached.write_bytes(b"not onnx")  # its recorded digest no longer matches: merged again, not loaded
    np.testing.assert_array_equal(Partition(m, 0, m.n_blocks).run(x), want)
    assert cached.read_bytes() != b"not onnx"
    block = m.block_path(m.blocks[2])
    block.write_bytes(block.read_bytes()[:-1] + b"\0")
    with pytest.raises(IntegrityError, match="sha256"):
        Partition(m, 0, m.n_blocks)  # the blocks are checked even when a fused graph is cached
