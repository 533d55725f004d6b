"""An edge node's certificate owns the endpoint it registered, and it may check the tokens only of
devices assigned to it (or moved away from it moments ago, whose frames are still on their way)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_server import assignment
from cloud_server.core import CloudCore
from cloud_server.registry import Registry
from ecd import zoo
from ecd.errors import NotFoundError, PermissionDeniedError
from ecd.split import Preferences
from ecd.types import DeviceRegistration, EdgeHeartbeat, EdgeRegistration, Encoding


def test_an_endpoint_belongs_to_the_certificate_that_registered_it(tmp_path: Path) -> None:
    core = CloudCore(Registry(str(tmp_path / "c.sqlite3")), [zoo.load_manifest("digits_cnn")])
    edge = core.edges.register(EdgeRegistration("10.0.0.5:50061", 10.0), owner="edge-1")
    assert core.edges.register(EdgeRegistration("10.0.0.5:50061", 20.0), owner="edge-1") == edge  # itself, again
    with pytest.raises(PermissionDeniedError, match="endpoint: 10.0.0.5:50061 is registered by another edge node"):
        core.edges.register(EdgeRegistration("10.0.0.5:50061", 1e-300), owner="edge-2")
    assert core.registry.edge(edge).capacity == 20.0
    with pytest.raises(PermissionDeniedError, match="belongs to another edge node"):
        core.edges.heartbeat(EdgeHeartbeat(edge, 0.0, 0), owner="edge-2")
    with pytest.raises(PermissionDeniedError, match="belongs to another edge node"):
        core.edges.deregister(edge, owner="edge-2")
    with pytest.raises(NotFoundError, match="edge_id"):
        core.edges.heartbeat(EdgeHeartbeat("nope", 0.0, 0), owner="edge-1")
    core.edges.heartbeat(EdgeHeartbeat(edge, 1.0, 0), owner="edge-1")


def test_an_edge_checks_only_its_devices_and_those_it_just_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    core = CloudCore(Registry(str(tmp_path / "c.sqlite3")), [zoo.load_manifest("digits_cnn")])
    first = core.edges.register(EdgeRegistration("127.0.0.1:1", 10.0), owner="edge-1")
    a = core.devices.register(DeviceRegistration("d", "pi4", "wifi", Preferences(0.5, 0.5, 0), "digits_cnn", 2, Encoding.FLOAT32))
    assert a.edge_id == first
    assert core.devices.get_assignment(a.device_id, a.token, edge_owner="edge-1").edge_id == first
    with pytest.raises(PermissionDeniedError, match="not assigned to this edge node"):
        core.devices.get_assignment(a.device_id, a.token, edge_owner="edge-2")
    second = core.edges.register(EdgeRegistration("127.0.0.1:2", 10.0), owner="edge-2")
    core.edges.deregister(first, owner="edge-1")
    assert core.placement.place(trigger="edge lost").devices[0].edge_id == second
    assert core.devices.get_assignment(a.device_id, a.token, edge_owner="edge-2").edge_id == second
    assert core.devices.get_assignment(a.device_id, a.token, edge_owner="edge-1").edge_id == second  # frames still on their way
    monkeypatch.setattr(assignment, "MOVE_GRACE_S", 0.0)
    with pytest.raises(PermissionDeniedError):
        core.devices.get_assignment(a.device_id, a.token, edge_owner="edge-1")
