"""The manifest, exactly: preprocessing by hand, the split geometry, the (de)serialisation round trip,
and every refusal with the message that names the field or file.

``test_partition.py`` runs the bundled model end to end; these pin the pieces a tier relies on
before it runs anything (the version that hashes the blocks, the shapes that chain).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from ecd import zoo
from ecd.errors import IntegrityError, ManifestError, SplitRangeError
from ecd.manifest import MANIFEST_FILENAME, SCHEMA, InputSpec, Manifest, load_heldout, model_version, sha256_bytes


@pytest.fixture
def m() -> Manifest:
    return zoo.load_manifest(zoo.DEFAULT_MODEL)


def test_preprocess_grey_by_hand() -> None:
    spec = InputSpec(shape=(1, 2, 2), pixel_scale=0.5, mean=(1.0,), std=(2.0,))
    x = spec.preprocess(np.array([[[0, 2], [4, 6]]], dtype=np.uint8))
    # (p·0.5 − 1)/2 for p = 0, 2, 4, 6
    assert x.dtype == np.float32 and x.shape == (1, 1, 2, 2)
    assert x.tolist() == [[[[-0.5, 0.0], [0.5, 1.0]]]]
    assert x.flags["C_CONTIGUOUS"]


def test_preprocess_colour_is_per_channel_and_nchw() -> None:
    spec = InputSpec(shape=(3, 1, 2), pixel_scale=1.0, mean=(0.0, 10.0, 20.0), std=(1.0, 2.0, 4.0))
    images = np.array([[[[1, 12, 24], [3, 14, 28]]]], dtype=np.uint8)  # [N=1, H=1, W=2, C=3]
    x = spec.preprocess(images)
    assert x.shape == (1, 3, 1, 2)
    assert x.tolist() == [[[[1.0, 3.0]], [[1.0, 2.0]], [[1.0, 2.0]]]]


def test_the_default_pixel_scale_maps_to_0_1() -> None:
    x = InputSpec(shape=(1, 1, 2)).preprocess(np.array([[[0, 255]]], dtype=np.uint8))
    assert x.tolist() == [[[[0.0, 1.0]]]]


@pytest.mark.parametrize(
    "images,message",
    [
        (np.zeros((2, 2), np.uint8), r"^images: expected \[N, H, W\] or \[N, H, W, C\], got shape \[2, 2\]$"),
        (np.zeros((1, 3, 2), np.uint8), r"^images: expected C x H x W = \[1, 2, 3\], got \[1, 3, 2\]$"),
        (np.zeros((1, 2, 3, 3), np.uint8), r"^images: expected C x H x W = \[1, 2, 3\], got \[3, 2, 3\]$"),
    ],
)
def test_preprocess_refuses_the_wrong_image_shape(images: np.ndarray, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        InputSpec(shape=(1, 2, 3)).preprocess(images)


def test_split_geometry(m: Manifest) -> None:
    assert m.activation_shape(0) == m.input.shape == m.blocks[0].input_shape
    for b in range(1, m.n_blocks):
        assert m.activation_shape(b) == m.blocks[b].input_shape == m.blocks[b - 1].output_shape
    assert m.activation_shape(m.n_blocks) == m.blocks[-1].output_shape
    assert m.activation_bytes(1) == 4 * int(np.prod(m.blocks[1].input_shape))
    for bad in (-1, m.n_blocks + 1):
        with pytest.raises(SplitRangeError, match=rf"^split: expected 0\.\.{m.n_blocks}, got {bad}$"):
            m.activation_shape(bad)
    assert m.blocks[2].flops == 2 * m.blocks[2].macs


def test_block_path_needs_a_directory(m: Manifest) -> None:
    assert m.block_path(m.blocks[0]) == m.directory / m.blocks[0].file
    loose = dataclasses.replace(m, directory=None)
    with pytest.raises(ManifestError, match=rf"^manifest of 'digits_cnn' has no directory to find {m.blocks[0].file}$"):
        loose.block_path(loose.blocks[0])


def test_version_is_the_hash_of_the_block_hashes(m: Manifest) -> None:
    shas = [b.sha256 for b in m.blocks]
    assert model_version(shas) == hashlib.sha256("\n".join(shas).encode()).hexdigest()[:16] == m.version
    assert sha256_bytes(b"abc") == hashlib.sha256(b"abc").hexdigest()


def test_round_trip_through_json(m: Manifest, tmp_path: Path) -> None:
    d = m.to_dict()
    assert d["schema"] == SCHEMA and "directory" not in d
    assert all(b["flops"] == 2 * b["macs"] for b in d["blocks"])
    assert isinstance(d["input"]["shape"], list) and isinstance(d["blocks"][0]["input_shape"], list)
    json.dumps(d)
    path = m.write(tmp_path)
    assert path == tmp_path / MANIFEST_FILENAME and path.read_text().endswith("\n")
    back = Manifest.load(tmp_path)
    assert back == m and back.directory == tmp_path
    assert Manifest.load(path) == m  # the file itself, or its folder


def broken(m: Manifest, change) -> dict:
    d = json.loads(json.dumps(m.to_dict()))
    change(d)
    return d


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: d.update(schema="ecd.manifest/0"), r"^schema: expected 'ecd.manifest/1', got 'ecd.manifest/0' in "),
        (lambda d: d.pop("schema"), r"^schema: expected 'ecd.manifest/1', got None in "),
        (lambda d: d.pop("labels"), r"^missing field 'labels' in "),
        (lambda d: d["input"].pop("std"), r"^missing field 'std' in "),
        (lambda d: d["blocks"][0].pop("sha256"), r"^missing field 'sha256' in "),
        (lambda d: d["blocks"][0].update(macs="many"), r"^malformed manifest in .*: invalid literal"),
        (lambda d: d.update(blocks=[]), r"^blocks: empty in "),
        (lambda d: d["blocks"][0].update(input_shape=[2, 32, 32]), r"^blocks\[0\]\.input_shape \[2, 32, 32\] != input\.shape \[1, 32, 32\] in "),
        (lambda d: d["blocks"][2].update(input_shape=[1, 2, 3]), r"^blocks\[2\]\.input_shape \[1, 2, 3\] != blocks\[1\]\.output_shape \["),
        (lambda d: d["blocks"][1].update(index=5), r"^blocks\[1\]\.index: expected 1, got 5 in "),
        (lambda d: d["blocks"][3].update(sha256="0" * 64), r"^version: '[0-9a-f]{16}' is not the hash of the block files \('[0-9a-f]{16}'\) in "),
    ],
)
def test_a_broken_manifest_is_refused_naming_the_field(m: Manifest, tmp_path: Path, change, message: str) -> None:
    (tmp_path / MANIFEST_FILENAME).write_text(json.dumps(broken(m, change)))
    with pytest.raises(ManifestError, match=message) as e:
        Manifest.load(tmp_path)
    if " in " in message:
        assert str(e.value).endswith(str(tmp_path / MANIFEST_FILENAME)) or str(tmp_path / MANIFEST_FILENAME) in str(e.value)


def test_from_dict_without_a_directory_says_no_file(m: Manifest) -> None:
    with pytest.raises(ManifestError, match=r"^blocks: empty$"):
        Manifest.from_dict(broken(m, lambda d: d.update(blocks=[])))
    back = Manifest.from_dict(broken(m, lambda d: d.pop("description")))
    assert back.description == "" and back.directory is None and back.build == m.build


def test_load_names_a_missing_or_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=rf"^no manifest at {tmp_path / MANIFEST_FILENAME}$"):
        Manifest.load(tmp_path)
    (tmp_path / MANIFEST_FILENAME).write_text("{")
    with pytest.raises(ManifestError, match=rf"^{tmp_path / MANIFEST_FILENAME} is not valid JSON: "):
        Manifest.load(tmp_path)


def test_heldout_is_verified(m: Manifest, bundled_copy: Path) -> None:
    held = load_heldout(m)
    assert held.images.shape[0] == held.labels.shape[0] == held.torch_logits.shape[0] >= 300
    copy = Manifest.load(bundled_copy)
    path = bundled_copy / copy.heldout["file"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=rf"^held-out file {path} does not match the manifest's sha256$"):
        load_heldout(copy)
    path.unlink()
    with pytest.raises(IntegrityError, match=rf"^held-out file missing: {path}$"):
        load_heldout(copy)
    with pytest.raises(ManifestError, match=r"^model 'digits_cnn' ships no held-out set \(manifest field 'heldout'\)$"):
        load_heldout(dataclasses.replace(copy, heldout=None))
    with pytest.raises(ManifestError, match="ships no held-out set"):
        load_heldout(dataclasses.replace(m, directory=None))
