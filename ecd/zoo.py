"""Find a model's manifest by name or path, torch-free.

Bundled models live in the installed ``models`` package (``models/artifacts/NAME``); models built on
this machine live under ``$ECD_MODEL_DIR`` (default ``~/.cache/ecd/models``), one folder each.
"""

from __future__ import annotations

import os
from pathlib import Path

from ecd.errors import ModelNotBuiltError, UnknownModelError
from ecd.manifest import MANIFEST_FILENAME, Manifest
from models.registry import REGISTRY, known_models

DEFAULT_MODEL = "digits_cnn"


def bundled_dir() -> Path:
    import models

    return Path(models.__file__).resolve().parent / "artifacts"


def user_model_dir() -> Path:
    """Where ``ecd models build`` writes models that are not bundled."""
    env = os.environ.get("ECD_MODEL_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ecd" / "models"


def model_dir(name: str) -> Path:
    """The folder a model named ``name`` is (or would be) built into."""
    if name not in REGISTRY:
        raise UnknownModelError(name, known_models())
    user = user_model_dir() / name
    if (user / MANIFEST_FILENAME).exists() or not REGISTRY[name].bundled:
        return user
    return bundled_dir() / name


def load_manifest(name_or_path: str | os.PathLike[str]) -> Manifest:
    """A manifest from a zoo name (``digits_cnn``) or a path to a model folder / manifest.json.

    A model rebuilt into ``$ECD_MODEL_DIR`` takes precedence over the bundled copy.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        return Manifest.load(path)
    directory = model_dir(text)
    if not (directory / MANIFEST_FILENAME).exists():
        raise ModelNotBuiltError(
            f"model {text!r} is not built on this machine (looked in {directory}); "
            f"build it with `ecd models build {text}` (needs the models extra: "
            f"pip install 'ecd-runtime[models]')"
        )
    return Manifest.load(directory)
