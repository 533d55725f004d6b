"""The scheduling package stands on numpy, scipy and ecd.errors alone (the ``cloud`` extra): no
research code, no CLI, no plotting, no torch — the cloud server imports it as a live service."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {"numpy", "scipy", "scheduling"}
ALLOWED_ECD = {"ecd", "ecd.errors"}
FORBIDDEN = ("research", "ecd_cli", "matplotlib", "torch", "torchvision", "cloud_server", "edge_node", "device_agent", "models")


def imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
    return out


def test_scheduling_imports_only_numpy_scipy_and_ecd_errors() -> None:
    bad = []
    for path in sorted((ROOT / "scheduling").rglob("*.py")):
        for name in imports(path):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in ALLOWED or name in ALLOWED_ECD:
                continue
            bad.append(f"{path.relative_to(ROOT)}: {name}")
    assert not bad, bad


def test_facades_load_without_research_cli_or_plotting() -> None:
    code = (
        "import sys\n"
        "import scheduling\n"
        "assert 'numpy' not in sys.modules, 'import scheduling is not light'\n"
        "import scheduling.errors, scheduling.placement, scheduling.placement.io, scheduling.allocation, "
        "scheduling.allocation.io, scheduling.quality, scheduling.quality.io\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_each_facade_has_the_same_shape() -> None:
    from scheduling import allocation, placement, quality

    for module, entry in ((placement, "solve"), (allocation, "allocate"), (quality, "assess")):
        assert "METHODS" in module.__all__ and entry in module.__all__, module.__name__
        assert all(hasattr(module, name) for name in module.__all__), module.__name__
    assert {"select_site", "Site", "Participant", "SiteSelection"} <= set(quality.__all__)
