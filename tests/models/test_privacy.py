"""The privacy measurement machinery (quick settings) and the committed bundled curve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli import ecd

torch = pytest.importorskip("torch")

from ecd.errors import IntegrityError  # noqa: E402
from ecd.manifest import Manifest  # noqa: E402
from ecd.leakage import defence_table  # noqa: E402
from models.measure_privacy import attack_images, torch_model_for  # noqa: E402
from models.privacy import QUICK, attack_split, non_monotone_excess, psnr, ssim  # noqa: E402

NOISE_BOUND = 0.05


def test_ssim_of_identical_images_is_one_and_of_noise_is_low() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((1, 32, 32))
    assert ssim(img, img) == 1.0
    assert psnr(img, img) is None
    assert ssim(img, rng.random((1, 32, 32))) < 0.3
    colour = rng.random((3, 48, 48))
    assert ssim(colour, colour) == 1.0
    assert 0.0 <= ssim(colour, 1 - colour) <= 1.0  # clipped


def test_reconstruction_from_split_zero_is_the_input(bundled_copy: Path) -> None:
    manifest = Manifest.load(bundled_copy)
    definition = torch_model_for(manifest)
    images, _ = attack_images(manifest, 4, seed=0)
    r = attack_split(definition.blocks, manifest.input, 0, images, QUICK)
    assert np.array_equal(r.whitebox, images.evaluation.numpy())
    assert np.array_equal(r.decoder, images.evaluation.numpy())
    assert r.p_priv == 1.0


def test_attacker_images_are_disjoint_from_evaluation_images(bundled_copy: Path) -> None:
    manifest = Manifest.load(bundled_copy)
    images, _ = attack_images(manifest, 32, seed=0)
    evaluation = {e.tobytes() for e in images.evaluation.numpy()}
    assert len(images.evaluation) == 32
    # the digits data set holds a few identical scans, so allow that, not more
    shared = sum(a.tobytes() in evaluation for a in images.attacker.numpy())
    assert shared <= 2


@pytest.mark.long
def test_quick_cli_writes_a_curve_and_a_picture(bundled_copy: Path, tmp_path: Path) -> None:
    before = Manifest.load(bundled_copy)
    picture = tmp_path / "privacy.png"
    proc = ecd("models", "privacy", str(bundled_copy), "--quick", "--plot", str(picture))
    assert proc.returncode == 0, proc.stderr
    after = Manifest.load(bundled_copy)
    assert after.version == before.version  # measuring privacy does not touch the blocks
    curve = after.privacy["curve"]
    assert len(curve) == after.n_blocks + 1
    assert curve[0] == 1.0
    assert all(0.0 <= v <= 1.0 for v in curve)
    # on a fixed seed, the deepest split is not reconstructed better than the first beyond noise
    assert curve[-1] <= curve[1] + NOISE_BOUND
    attacks = after.privacy["attacks"]
    for name in ("whitebox_rmle", "learned_decoder"):
        assert len(attacks[name]["ssim"]) == len(curve)
        assert attacks[name]["settings"]["seed"] == 0
    assert curve == [max(a, b) for a, b in zip(attacks["whitebox_rmle"]["ssim"], attacks["learned_decoder"]["ssim"])]
    assert picture.stat().st_size > 10_000
    # issue 17: the label-only baseline, the leakage beyond it, and the defence table
    lo = after.privacy["label_only"]
    assert 0.0 < lo["ssim"] < 1.0 and 0.0 <= lo["identity_match"] <= 1.0
    leak = after.privacy["leakage"]
    assert len(leak) == len(curve) and leak[0] == 1.0 and all(0.0 <= v <= 1.0 for v in leak)
    for name in ("whitebox_rmle", "learned_decoder"):
        assert attacks[name]["identity_match"][0] == 1.0
    table = defence_table(after, required=True)
    assert table.strengths.tolist() == [0.0, 2.0, 8.0]
    assert table.leakage[0].tolist() == leak
    assert (tmp_path / "privacy_defence.png").stat().st_size > 10_000
    assert "leakage L" in proc.stdout and "strength" in proc.stdout


def test_tampered_weights_are_refused(bundled_copy: Path) -> None:
    (bundled_copy / "weights.pt").write_bytes(b"not weights")
    with pytest.raises(IntegrityError, match="weights.pt"):
        torch_model_for(Manifest.load(bundled_copy))


def test_committed_bundled_curve_has_the_published_shape(bundled: Manifest) -> None:
    """The committed manifest carries a full measurement by both attacks, high after the first conv
    block and falling with depth (non-monotone noise at most 0.05)."""
    privacy = bundled.privacy
    assert privacy is not None, "the bundled manifest must carry its measured curve"
    assert privacy["settings"]["n_images"] >= 32
    assert privacy["images"]["n_evaluation"] >= 32
    for name in ("whitebox_rmle", "learned_decoder"):
        assert privacy["attacks"][name]["settings"]
    curve = privacy["curve"]
    assert len(curve) == bundled.n_blocks + 1
    assert curve[0] == 1.0
    assert curve[1] >= 0.8
    assert non_monotone_excess(curve) <= NOISE_BOUND
    assert curve[-1] < curve[1]
    json.dumps(privacy)  # plain JSON
