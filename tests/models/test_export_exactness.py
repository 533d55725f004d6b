"""Every model of the zoo, split at every point, equals its torch full model (Petals-style exact
match): blocks [0, b) then [b, n) under onnxruntime vs the torch module, on real images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ecd.manifest import Manifest  # noqa: E402
from ecd.partition import Partition  # noqa: E402
from ecd.splitcheck import relative_max_abs_diff  # noqa: E402
from models.definition import ModelDefinition, build_model, define_model, export_definition  # noqa: E402
from ecd.zoo import REGISTRY  # noqa: E402

TOLERANCE = 1e-4


def real_photos(size: int) -> np.ndarray:
    """scikit-image's bundled real photos, resized to the model's input (uint8 NHWC)."""
    from skimage import data
    from skimage.transform import resize

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    return np.stack(
        [(resize(p, (size, size), anti_aliasing=True) * 255).round().astype(np.uint8) for p in photos]
    )


def assert_every_split_matches(manifest: Manifest, full_model: torch.nn.Module, x: np.ndarray) -> None:
    with torch.no_grad():
        want = full_model.eval()(torch.from_numpy(x)).numpy()
    n = manifest.n_blocks
    for b in range(n + 1):
        got = Partition(manifest, b, n).run(Partition(manifest, 0, b).run(x))
        diff = relative_max_abs_diff(got, want)
        assert diff <= TOLERANCE, f"{manifest.model_id} split {b}: relative max-abs diff {diff:.2e}"
        assert np.array_equal(got.argmax(1), want.argmax(1)), f"{manifest.model_id} split {b}: argmax differs"


@pytest.fixture(scope="module")
def quick_digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, ModelDefinition]:
    from models.digits_cnn import build

    definition = build(weights=None, seed=0, input_size=32, epochs=1)
    return export_definition(definition, tmp_path_factory.mktemp("digits")), definition


def test_digits_every_split_equals_torch(quick_digits: tuple[Manifest, ModelDefinition]) -> None:
    from models.digits_cnn import load_digits_split

    manifest, definition = quick_digits
    x = manifest.input.preprocess(load_digits_split().test_images[:64])
    assert_every_split_matches(manifest, definition.full_model, x)


def test_digits_blocks_chain_to_the_full_model(quick_digits: tuple[Manifest, ModelDefinition]) -> None:
    _, definition = quick_digits
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        chained = x
        for block in definition.blocks:
            chained = block.module(chained)
        assert torch.equal(chained, definition.full_model(x))


def test_digits_user_weights_are_loaded(quick_digits: tuple[Manifest, ModelDefinition], tmp_path: Path) -> None:
    from models.digits_cnn import build

    _, definition = quick_digits
    weights = tmp_path / "digits.pt"
    torch.save(definition.full_model.state_dict(), weights)
    again = build(weights=weights, seed=123, input_size=32)
    assert again.training["weights"].startswith("user state_dict")
    assert again.training["heldout_accuracy"] == definition.training["heldout_accuracy"]


SMALL = 64  # an input size for the tests about weights, which do not depend on it


@pytest.mark.long  # AlexNet at 1000 px: about 100 s
@pytest.mark.parametrize("name", [n for n, e in REGISTRY.items() if not e.bundled])
def test_torchvision_model_every_split_equals_torch(name: str, tmp_path: Path) -> None:
    manifest, definition = build_model(name, tmp_path / name, seed=0)
    assert Manifest.load(tmp_path / name) == manifest
    assert manifest.n_blocks >= 8
    assert len(manifest.labels) == 1000
    x = manifest.input.preprocess(real_photos(manifest.input.shape[-1]))
    assert_every_split_matches(manifest, definition.full_model, x)


def test_user_weights_reach_the_exported_blocks(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(7)
    reference = torchvision.models.resnet18(weights=None).eval()
    weights = tmp_path / "resnet18.pt"
    torch.save({"state_dict": reference.state_dict()}, weights)
    manifest, _ = build_model("resnet18", tmp_path / "r", weights=weights, seed=0, input_size=SMALL)
    assert manifest.training == {"weights": "user state_dict resnet18.pt"}
    assert_every_split_matches(manifest, reference, manifest.input.preprocess(real_photos(SMALL)))


def test_version_changes_with_weights(tmp_path: Path) -> None:
    a, _ = build_model("resnet18", tmp_path / "a", seed=0, input_size=SMALL)
    b, _ = build_model("resnet18", tmp_path / "b", seed=1, input_size=SMALL)
    assert a.version != b.version
    assert [x.sha256 for x in a.blocks] != [x.sha256 for x in b.blocks]


def test_alexnet_early_activation_outweighs_the_image() -> None:
    """The shape of paper 000's Fig. 3: the first conv's output is larger than the raw input."""
    definition = define_model("alexnet")
    assert definition.input_spec.shape == (3, 1000, 1000)
    x = torch.zeros(1, 3, 1000, 1000)
    with torch.no_grad():
        first = definition.blocks[0].module(x)
    assert first.numel() > x.numel()
