"""tests/ecd: the bundled model's manifest (fixture ``m``), which the split and leakage tests read."""

from __future__ import annotations

import pytest

from ecd import zoo
from ecd.manifest import Manifest


@pytest.fixture
def m() -> Manifest:
    return zoo.load_manifest(zoo.DEFAULT_MODEL)
