"""One writer per fact, checked on the source: each registry write is called from exactly one
module of the cloud core, the part that owns that fact (see ``cloud_server/core.py``). A second
writer added later (a read that quietly writes, a shortcut past the owner) fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import cloud_server

OWNER = {
    "add_device": "assignment", "set_device_edges": "assignment",  # a device's edge
    "update_device": "devices", "revoke_device": "devices", "record_location": "devices",
    "touch_device": "leases",
    "add_edge": "edges", "heartbeat": "edges", "remove_edge": "edges",
    "add_placement": "live_placement",
    "hold_lease": "leader", "release_lease": "leader",
    "put_campaign": "crowdsensing", "add_tasks": "crowdsensing", "answer_task": "crowdsensing",
    "set_reputations": "crowdsensing",
    "put_head": "served",
}


def registry_writes() -> dict[str, set[str]]:
    """Registry write method -> the cloud_server modules calling it on a ``registry``."""
    found: dict[str, set[str]] = {}
    for path in Path(cloud_server.__file__).parent.glob("*.py"):
        if path.stem.startswith("registry"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in OWNER:
                target = node.func.value
                name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
                if name == "registry":
                    found.setdefault(node.func.attr, set()).add(path.stem)
    return found


def test_every_registry_write_has_exactly_its_owner_as_caller() -> None:
    assert registry_writes() == {method: {owner} for method, owner in OWNER.items()}
