"""Shared fixtures. Every test gets its own model cache, so no test sees another's builds or the
user's ``~/.cache/ecd``."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ecd import zoo
from ecd.manifest import Manifest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``long`` (tens of seconds each) run first, the rest in their order. Under xdist
    (``make test``) a long test that starts last runs alone after the other worker has finished;
    one that starts first runs beside the short tests the other worker takes meanwhile."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture(autouse=True)
def isolated_model_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path_factory.mktemp("ecd-models")
    monkeypatch.setenv("ECD_MODEL_DIR", str(path))
    return path


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """Every test leaves no child process behind (services are stopped, CLIs have exited)."""
    import psutil

    yield
    alive = [p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
    gone, alive = psutil.wait_procs(alive, timeout=10)
    assert not alive, f"left behind: {[p.cmdline() for p in alive]}"


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


@pytest.fixture
def tiers(tmp_path: Path):
    """A cloud server and an edge node, real gRPC servers on loopback ports chosen by the OS."""
    from harness import start_tiers, stop_tiers

    t = start_tiers(tmp_path)
    yield t
    stop_tiers(t)
