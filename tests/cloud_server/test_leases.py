"""Device leases: a device not heard from for ``device_lease_s`` drops out of placement and the
per-edge counts, and comes back, on a live edge node, the moment it calls again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cloud_server.core import CloudCore
from cloud_server.registry import Registry
from cloud_server.registry_storage import RegistryFullError
from ecd import zoo
from ecd.errors import LimitError
from ecd.split import Preferences
from ecd.types import DeviceRegistration, EdgeRegistration, Encoding, Position

from cloud_core_harness import Cloud


def register(core: CloudCore, name: str) -> tuple[str, str]:
    a = core.devices.register(DeviceRegistration(name, "pi4", "wifi", Preferences(0.5, 0.5, 0), "digits_cnn", 2,
                                                Encoding.FLOAT32, Position(40.7, -74.0)))
    return a.device_id, a.token


def test_a_device_past_its_lease_is_left_out_until_it_calls_again(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path / "cloud.sqlite3"))
    core = CloudCore(registry, [zoo.load_manifest("digits_cnn")], device_lease_s=60.0)
    edge = core.edges.register(EdgeRegistration("127.0.0.1:1", 10.0, Position(40.7, -74.0)))
    (live, _), (gone, token) = register(core, "live"), register(core, "gone")
    assert registry.devices_per_edge(core.leases.live_since()) == {edge: 2}
    registry.touch_device(gone, time.time() - 61)  # last heard from 61 s ago
    assert registry.devices_per_edge(core.leases.live_since()) == {edge: 1}
    assert [d.device_id for d in core.placement.place(trigger="operator").devices] == [live]
    core.leases._written.clear()  # its last renewal is older than a quarter lease
    assert core.devices.get_assignment(gone, token).edge_id == edge
    assert registry.devices_per_edge(core.leases.live_since()) == {edge: 2}
    assert sorted(d.device_id for d in core.placement.place(trigger="operator").devices) == sorted([live, gone])


def test_a_device_whose_edge_died_while_it_was_away_is_given_a_live_one(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path / "cloud.sqlite3"))
    core = CloudCore(registry, [zoo.load_manifest("digits_cnn")], edge_timeout_s=3.0)
    first = core.edges.register(EdgeRegistration("127.0.0.1:1", 10.0, Position(40.7, -74.0)))
    device, token = register(core, "d")
    second = core.edges.register(EdgeRegistration("127.0.0.1:2", 10.0, Position(40.7, -74.0)))
    assert registry.device(device).edge_id == first
    core.edges.deregister(first)  # no placement has run since
    a = core.devices.get_assignment(device, token)
    assert (a.edge_id, a.edge_endpoint) == (second, "127.0.0.1:2")


def test_one_device_certificate_holds_a_stated_number_of_live_devices(tmp_path: Path) -> None:
    """A stolen (or a restarting agent's) certificate cannot grow the fleet without bound: it holds
    at most ``per_certificate`` live devices; one whose lease ran out frees its place."""
    registry = Registry(str(tmp_path / "cloud.sqlite3"))
    core = CloudCore(registry, [zoo.load_manifest("digits_cnn")], device_lease_s=60.0)
    core.edges.register(EdgeRegistration("127.0.0.1:1", 10.0, Position(40.7, -74.0)))
    core.devices.per_certificate = 2
    req = DeviceRegistration("d", "pi4", "wifi", Preferences(0.5, 0.5, 0), "digits_cnn", 2, Encoding.FLOAT32)
    first = core.devices.register(req, holder="device-1")
    core.devices.register(req, holder="device-1")
    with pytest.raises(LimitError, match=r"^holder: device certificate 'device-1' already holds 2 live devices \(at most 2\)"):
        core.devices.register(req, holder="device-1")
    core.devices.register(req, holder="device-2")  # another certificate has its own quota
    core.devices.register(req)  # plaintext (no certificate): rate-limited per caller instead
    registry.touch_device(first.device_id, time.time() - 61)  # gone quiet past its lease
    core.devices.register(req, holder="device-1")


def test_a_lease_the_full_registry_disk_cannot_store_is_tried_again_a_quarter_lease_on(cloud: Cloud,
                                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk refuses the lease's write; the call is served all the same, and the write is not
    tried again at every frame: the next try comes a quarter lease (150 s) later."""
    cloud.edge(1)
    a = cloud.register()
    t0 = cloud.clock.now
    tried: list[float] = []

    def full(device_id: str, unix: float) -> None:
        tried.append(unix)
        raise RegistryFullError("db: registry disk full (test): no space left on device")

    monkeypatch.setattr(cloud.core.registry, "touch_device", full)
    for dt in (1.0, 2.0, 150.5, 151.0):
        cloud.clock.now = t0 + dt
        assert cloud.core.devices.authenticate(a.device_id, a.token).device_id == a.device_id
    assert tried == [t0 + 1.0, t0 + 151.0]
