"""The docs tests' fixtures: the generators in tools/ (not a package), loaded from their files."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_tool(name: str) -> ModuleType:
    """tools/NAME.py as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def api() -> ModuleType:
    return load_tool("api_reference")


@pytest.fixture(scope="module")
def cli_reference() -> ModuleType:
    return load_tool("cli_reference")
