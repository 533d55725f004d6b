"""Shared fixtures. Every test gets its own model cache, so no test sees another's builds or the
user's ``~/.cache/ecd``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ecd import zoo
from ecd.manifest import Manifest


@pytest.fixture(autouse=True)
def isolated_model_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path_factory.mktemp("ecd-models")
    monkeypatch.setenv("ECD_MODEL_DIR", str(path))
    return path


@pytest.fixture
def bundled() -> Manifest:
    return zoo.load_manifest(zoo.DEFAULT_MODEL)


@pytest.fixture
def bundled_copy(tmp_path: Path) -> Path:
    """A private, writable copy of the bundled model's folder (for tampering)."""
    src = zoo.bundled_dir() / zoo.DEFAULT_MODEL
    dst = tmp_path / zoo.DEFAULT_MODEL
    shutil.copytree(src, dst)
    return dst
