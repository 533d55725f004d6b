"""The cloud's control-plane monitor and its change notifier (cloud_server.service), driven with a
fake core: what each periodic check does for a leader and a follower, with the registry's disk
full or writable, and how the write path is published (``ecd_registry_writable`` and gRPC health's
``ecd.registry``). No server, no sleeps: the checks are called directly, the loop is driven by a
kick."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest
from grpc_health.v1 import health_pb2

from cloud_server.registry import StorageState
from cloud_server.service import REGISTRY_HEALTH, Changes, ControlMonitor
from ecd.metrics import SchedulerMetrics, ServiceMetrics


class FakeCore:
    """What the monitor reads and calls of a CloudCore, recording the calls."""

    def __init__(self, *, leads: bool = True, due: str | None = None, follows: bool = False,
                 state: StorageState = StorageState.WRITABLE, place_error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.prometheus = ServiceMetrics("cloud").registry
        self.metrics = SchedulerMetrics(self.prometheus)
        self.registry = SimpleNamespace(storage=SimpleNamespace(state=state), probe_write=lambda: self.calls.append("probe"))

        def renew() -> bool:
            self.calls.append("renew")
            return leads

        def follow() -> bool:
            self.calls.append("follow")
            return follows

        def place(trigger: str) -> None:
            self.calls.append(f"place:{trigger}")
            if place_error is not None:
                raise place_error

        self.leader = SimpleNamespace(renew=renew)
        self.placement = SimpleNamespace(follow=follow, due=lambda: due, place=place)
        self.on_change = lambda: self.calls.append("changed")

    def writable(self) -> float | None:
        return self.prometheus.get_sample_value("ecd_registry_writable")


class FakeHealth:
    def __init__(self) -> None:
        self.set_to: dict[str, int] = {}

    async def set(self, service: str, status: int) -> None:
        self.set_to[service] = status


def test_the_leader_places_when_a_placement_is_due_naming_the_reason() -> None:
    core = FakeCore(due="edge joined")
    ControlMonitor(core, 60).check()
    assert core.calls == ["renew", "place:edge joined"]


def test_the_leader_with_nothing_due_places_nothing() -> None:
    core = FakeCore(due=None)
    ControlMonitor(core, 60).check()
    assert core.calls == ["renew"]


def test_a_follower_takes_up_the_leaders_placement_and_tells_its_watchers_only_when_it_moved() -> None:
    moved = FakeCore(leads=False, follows=True, due="edge joined")
    ControlMonitor(moved, 60).check()
    assert moved.calls == ["renew", "follow", "changed"]  # never places itself
    same = FakeCore(leads=False, follows=False, due="edge joined")
    ControlMonitor(same, 60).check()
    assert same.calls == ["renew", "follow"]


def test_a_failed_placement_is_logged_and_the_check_returns(caplog: pytest.LogCaptureFixture) -> None:
    core = FakeCore(due="devices joined", place_error=RuntimeError("solver broke"))
    with caplog.at_level(logging.WARNING, logger="ecd.cloud"):
        ControlMonitor(core, 60).check()
    assert core.calls == ["renew", "place:devices joined"]
    assert "devices joined: placement failed: solver broke" in caplog.text


def test_a_full_disk_is_probed_each_check_and_a_writable_one_is_not() -> None:
    full = FakeCore(state=StorageState.FULL)
    ControlMonitor(full, 60).check()
    assert full.calls == ["probe", "renew"]
    writable = FakeCore(state=StorageState.WRITABLE)
    ControlMonitor(writable, 60).check()
    assert "probe" not in writable.calls


@pytest.mark.parametrize("state, gauge, health", [
    (StorageState.WRITABLE, 1.0, health_pb2.HealthCheckResponse.SERVING),
    (StorageState.FULL, 0.0, health_pb2.HealthCheckResponse.NOT_SERVING),
])
def test_the_write_path_is_published_as_a_gauge_and_as_health(state: StorageState, gauge: float, health: int) -> None:
    core = FakeCore(state=state)
    core.metrics.registry_writable.set(-1)
    monitor = ControlMonitor(core, 60)
    asyncio.run(monitor.publish_storage())  # no health servicer yet: the gauge alone
    assert core.writable() == gauge
    monitor.health = FakeHealth()
    asyncio.run(monitor.publish_storage())
    assert monitor.health.set_to == {REGISTRY_HEALTH: health}
    assert REGISTRY_HEALTH == "ecd.registry"


def test_the_monitor_checks_at_once_when_kicked_and_goes_on_after_a_failed_check(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> list[str]:
        core = FakeCore(due="edge joined", state=StorageState.FULL)
        core.registry.probe_write = lambda: (_ for _ in ()).throw(OSError("registry out of reach"))
        monitor = ControlMonitor(core, 3600)  # never by the clock here: only a kick wakes it
        monitor.health = FakeHealth()
        task = asyncio.create_task(monitor.run())
        try:
            for _ in range(2):
                monitor.kick()
                while not monitor.health.set_to:
                    await asyncio.sleep(0.01)
                assert not monitor.kicked.is_set()  # cleared for the next kick
                monitor.health.set_to.clear()
        finally:
            task.cancel()
        return core.calls

    with caplog.at_level(logging.WARNING, logger="ecd.cloud"):
        calls = asyncio.run(scenario())
    assert calls == []  # the probe raised before anything else, twice: the loop went on
    assert caplog.text.count("check failed: registry out of reach") == 2


def test_without_a_kick_the_monitor_checks_every_period() -> None:
    async def scenario() -> FakeCore:
        core = FakeCore(due=None)
        monitor = ControlMonitor(core, 0.05)  # by the clock alone: no kick
        monitor.health = FakeHealth()
        task = asyncio.create_task(monitor.run())
        try:
            while core.calls.count("renew") < 2:
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
        return core

    assert asyncio.run(scenario()).calls[:2] == ["renew", "renew"]


def test_a_notice_wakes_every_watcher_of_the_event_before_it_and_none_after() -> None:
    async def scenario() -> tuple[bool, bool, bool]:
        changes = Changes(asyncio.get_running_loop())
        before = changes.event
        waiter = asyncio.create_task(before.wait())
        changes.notify()
        await asyncio.wait_for(waiter, timeout=5)
        return before.is_set(), changes.event is before, changes.event.is_set()

    woken, same, new_set = asyncio.run(scenario())
    assert woken and not same and not new_set


def test_a_notice_from_another_thread_wakes_the_loop() -> None:
    import threading

    async def scenario() -> bool:
        changes = Changes(asyncio.get_running_loop())
        before = changes.event
        threading.Thread(target=changes.notify).start()
        await asyncio.wait_for(before.wait(), timeout=5)
        return before.is_set()

    assert asyncio.run(scenario())
