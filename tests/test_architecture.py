"""The layout is the architecture: these rules are checked by walking every import in the source
(function-level imports included), so a change that breaks one fails here, not in review.

The table is the one in docs/architecture.md.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ecd", "ecd_cli", "models", "device_agent", "edge_node", "cloud_server", "scheduling", "research")

# package -> the project packages it may import (itself always allowed)
MAY_IMPORT = {
    "ecd": set(),
    "models": {"ecd"},
    "scheduling": {"ecd"},
    "device_agent": {"ecd"},
    "edge_node": {"ecd"},
    "cloud_server": {"ecd", "scheduling"},
    "research": {"ecd", "scheduling"},
    "ecd_cli": {"ecd", "models", "device_agent", "edge_node", "cloud_server", "scheduling", "research"},
}
WIRE = ("grpc", "grpc_health", "grpc_reflection", "ecd.v1")  # gRPC and the generated stubs
HEAVY = ("torch", "torchvision", "onnx", "scipy", "matplotlib", "sklearn", "skimage", "tqdm")
RUNTIME = ("ecd", "device_agent", "edge_node")  # what a phone or a Pi installs


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _sources() -> dict[str, set[str]]:
    graph = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "v1" in path.relative_to(REPO).parts[:2] and path.parts[-2] == "v1":
                continue  # the generated stubs themselves
            graph[_module_name(path)] = _imports(path)
    return graph


GRAPH = _sources()


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_walk_sees_the_whole_tree() -> None:
    assert {"ecd.transport.serde", "edge_node.core", "cloud_server.service", "ecd_cli.main", "scheduling.placement"} <= set(GRAPH)
    assert "grpc" in GRAPH["edge_node.service"]  # the walk does find imports


def test_only_the_seam_and_the_services_import_grpc_or_the_stubs() -> None:
    offenders = sorted(
        f"{module} imports {name}"
        for module, names in GRAPH.items()
        for name in names
        if _matches(name, WIRE)
        and not (module.startswith("ecd.transport") or module.endswith("service"))  # service.py, scheduler_service.py
    )
    assert not offenders, offenders


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_packages_import_only_downward(package: str) -> None:
    allowed = MAY_IMPORT[package] | {package}
    offenders = sorted(
        f"{module} imports {name}"
        for module, names in GRAPH.items()
        if module.split(".")[0] == package
        for name in names
        if name.split(".")[0] in PACKAGES and name.split(".")[0] not in allowed
    )
    assert not offenders, offenders


def test_the_runtime_never_imports_torch_scipy_or_plotting() -> None:
    offenders = sorted(
        f"{module} imports {name}"
        for module, names in GRAPH.items()
        if module.split(".")[0] in RUNTIME or module.startswith("cloud_server") or module.startswith("scheduling")
        for name in names
        if _matches(name, HEAVY) and not (module.startswith(("cloud_server", "scheduling")) and _matches(name, ("scipy",)))
        and not (module == "ecd.partition" and _matches(name, ("onnx",)))  # onnx.compose fuses a tier's blocks
    )
    assert not offenders, offenders


def test_no_import_cycle_between_modules() -> None:
    modules = set(GRAPH)
    edges = defaultdict(set)
    for module, names in GRAPH.items():
        for name in names:
            # "from a.b import c" names a.b.c: the module if it is one, else a.b
            target = name if name in modules else name.rsplit(".", 1)[0] if "." in name else name
            if target in modules and target != module:
                edges[module].add(target)
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle.extend(stack[stack.index(nxt):] + [node, nxt] if nxt in stack else [node, nxt])
                return True
            if nxt not in state and visit(nxt, stack + [node]):
                return True
        state[node] = 2
        return False

    for module in sorted(modules):
        if module not in state and visit(module, []):
            break
    assert not cycle, " -> ".join(cycle)


MAX_MODULE_LINES = 400  # a newcomer reads a module in one sitting; past this, split it by responsibility
GENERATED = ("ecd/v1/",)  # protoc's output, committed and checked for drift elsewhere


def test_no_hand_written_module_is_over_400_lines() -> None:
    """Every Python module of the project, tests, benchmarks, tools and deploy scripts included,
    stays readable in one sitting; generated code is left out."""
    roots = PACKAGES + ("tests", "benchmarks", "tools", "deploy")
    too_long = sorted(
        f"{path.relative_to(REPO)}: {n} lines"
        for root in roots
        for path in (REPO / root).rglob("*.py")
        if not str(path.relative_to(REPO)).startswith(GENERATED)
        and (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    )
    assert not too_long, too_long
