"""Issue 17: leakage beyond the label, the device-side defence, and attacks that adapt to it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ecd import zoo  # noqa: E402
from ecd.manifest import Manifest  # noqa: E402
from ecd.partition import Partition  # noqa: E402
from ecd.leakage import defence_table  # noqa: E402
from models.measure_privacy import attack_images, torch_model_for  # noqa: E402
from models.inversion import Defence, calibrate, decoder_attack, prefix  # noqa: E402
from models.privacy import QUICK, AttackImages, attack_split, identity_match, leakage, measure_label_only  # noqa: E402


def test_identity_match_and_leakage_arithmetic() -> None:
    rng = np.random.default_rng(0)
    originals = rng.random((20, 1, 8, 8))
    assert identity_match(originals, originals) == 1.0
    assert identity_match(originals + 0.05 * rng.standard_normal(originals.shape), originals) == 1.0
    assert identity_match(originals[::-1].copy(), originals) < 0.2
    assert leakage(1.0, 0.6) == 1.0
    assert leakage(0.6, 0.6) == 0.0
    assert leakage(0.5, 0.6) == 0.0  # below the baseline is clipped, not negative
    assert leakage(0.8, 0.6) == pytest.approx(0.5)
    assert leakage(0.6, 0.6, match=0.55, label_only_match=0.1) == pytest.approx(0.5)  # identity counts too


def test_label_only_attacker_draws_the_class_mean(bundled_copy: Path) -> None:
    manifest = Manifest.load(bundled_copy)
    definition = torch_model_for(manifest)
    images, _ = attack_images(manifest, 16, seed=0)
    lo = measure_label_only(images, definition.blocks, manifest.input)
    assert lo is not None
    assert 0.4 < lo.ssim < 0.9  # digits of one class look alike
    # same class, same drawing: one reconstruction per class
    assert len({r.tobytes() for r in lo.reconstructions}) <= 10


@dataclass(frozen=True)
class PlantedOffset(Defence):
    """A weak 'defence': a large offset per channel plus a little noise. It swamps the signal's
    norm and fools an attacker who ignores it, but the offset carries no randomness and the noise is
    small, so an attacker who knows the defence (the measurement's adaptive decoder) removes it."""

    def apply(self, z, split, strength, gen):  # noqa: ANN001
        shape = (z.shape[1],) + (1,) * (z.ndim - 2)
        offset = torch.randn(shape, generator=torch.Generator().manual_seed(123))
        return z + strength * self.scale[split] * offset + 0.05 * self.scale[split] * torch.randn(z.shape, generator=gen)


def test_measurement_sees_through_a_planted_weak_defence(bundled_copy: Path) -> None:
    manifest = Manifest.load(bundled_copy)
    blocks = torch_model_for(manifest).blocks
    images, _ = attack_images(manifest, 16, seed=0)
    images = AttackImages(images.evaluation, images.attacker[:500])
    s = replace(QUICK, n_images=16, decoder_epochs=10, decoder_width=8, whitebox_iters=5)
    split, strength = 2, 20.0
    calibrated = calibrate(blocks, manifest.input, images.attacker)
    planted = PlantedOffset(calibrated.scale)
    clean = attack_split(blocks, manifest.input, split, images, s)
    adaptive = attack_split(blocks, manifest.input, split, images, s, planted, strength)
    # a naive attacker: decoder trained on undefended activations, applied to the defended ones
    f = prefix(blocks, manifest.input, split)
    with torch.no_grad():
        z = planted.apply(f(images.evaluation), split, strength, torch.Generator())
    naive = decoder_attack(f, images.attacker, z, s).numpy()
    from models.privacy import _mean_scores

    naive_ssim, _ = _mean_scores(naive, images.evaluation.numpy())
    assert naive_ssim < clean.decoder_ssim - 0.2, (naive_ssim, clean.decoder_ssim)  # looks like a defence...
    assert adaptive.decoder_ssim > clean.decoder_ssim - 0.1, (adaptive.decoder_ssim, clean.decoder_ssim)  # ...it is not


def test_laplace_noise_is_calibrated_and_seeded(bundled_copy: Path) -> None:
    manifest = Manifest.load(bundled_copy)
    blocks = torch_model_for(manifest).blocks
    images, _ = attack_images(manifest, 4, seed=0)
    d = calibrate(blocks, manifest.input, images.attacker[:200])
    assert len(d.scale) == manifest.n_blocks + 1 and all(v > 0 for v in d.scale)
    z = torch.zeros(20_000)
    a = d.apply(z, 3, 2.0, torch.Generator().manual_seed(1))
    b = d.apply(z, 3, 2.0, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert float(a.abs().mean()) == pytest.approx(2.0 * d.scale[3], rel=0.05)  # E|Laplace(0, s)| = s
    assert torch.equal(d.apply(z, 3, 0.0, torch.Generator()), z)


def _committed(name: str) -> Manifest:
    return zoo.Manifest.load(zoo.bundled_dir() / name) if hasattr(zoo, "Manifest") else Manifest.load(zoo.bundled_dir() / name)


@pytest.mark.parametrize("name", ["digits_cnn", "faces_cnn"])
def test_committed_defence_tables_are_complete_and_valid(name: str) -> None:
    m = _committed(name)
    table = defence_table(m, required=True)
    assert table is not None
    d = m.privacy["defence"]
    assert len(table.strengths) >= 4 and table.strengths[0] == 0  # 0 and at least three noise levels
    for key in ("whitebox_ssim", "decoder_ssim", "whitebox_identity_match", "decoder_identity_match",
                "whitebox_psnr_db", "decoder_psnr_db", "leakage", "accuracy"):
        assert np.shape(d["table"][key]) == (len(table.strengths), m.n_blocks + 1), key
    assert m.privacy["label_only"]["ssim"] > 0
    assert len(m.privacy["leakage"]) == m.n_blocks + 1


def test_committed_faces_model_is_tiny_and_accurate() -> None:
    m = _committed("faces_cnn")
    assert m.input.shape == (1, 25, 25) and m.labels == ("not_face", "face")
    assert all((m.directory / b.file).stat().st_size < 16_000 for b in m.blocks)
    assert m.training["heldout_accuracy"] >= 0.9
    held = np.load(m.directory / "heldout.npz")
    x = m.input.preprocess(held["images"])
    for b in range(m.n_blocks + 1):
        logits = Partition(m, b, m.n_blocks).run(Partition(m, 0, b).run(x))
        assert np.array_equal(logits.argmax(1), held["torch_logits"].argmax(1)), b


def test_digits_leakage_falls_with_depth_and_strength() -> None:
    """The committed digits table: within the attacks' noise, the beyond-label leakage does not rise
    with depth (undefended) and does not rise with the defence's strength (every split)."""
    bound = 0.15  # 24 evaluation images: identity matching moves in steps of 1/24
    m = _committed("digits_cnn")
    leak = np.asarray(m.privacy["defence"]["table"]["leakage"])
    assert leak[0, 0] == 1.0
    assert np.all(np.diff(leak[0]) <= bound), leak[0]
    assert leak[0, -1] < leak[0, 1]
    assert np.all(np.diff(leak, axis=0) <= bound), leak
    assert np.all(leak[-1] <= leak[0] + 1e-9)
