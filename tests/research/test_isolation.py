"""Research code (experiments, plots, the ECD simulation, the Foursquare readers) is never imported
by the runtime, the services or the schedulers — only by the CLI, benchmarks and tests."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ("ecd", "scheduling", "cloud_server", "edge_node", "device_agent")


def test_no_library_or_service_imports_research() -> None:
    bad = []
    for package in LIBRARIES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
                bad += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "research"]
    assert not bad, bad
