"""Device leases: a device not heard from for ``lease_s`` is gone — placement, campaigns, site
selection and the per-edge counts leave it out until it calls again.

:class:`Leases` is the one writer of a device's ``last_seen``: every authenticated call (its frames
included) renews the lease, written at most every ``lease_s / 4`` so that frames do not become
database writes.
"""

from __future__ import annotations

import contextlib

from cloud_server.registry import Registry
from cloud_server.registry_storage import RegistryFullError
from ecd.clock import SYSTEM_CLOCK, Clock


class Leases:
    def __init__(self, registry: Registry, lease_s: float = 600.0, clock: Clock = SYSTEM_CLOCK):
        self.registry = registry
        self.lease_s = lease_s
        self.clock = clock
        self._written: dict[str, float] = {}  # device id -> when its lease was last written

    def renew(self, device_id: str) -> None:
        """Renew the lease (a write at most every lease/4). On a full registry disk the lease is not
        stored, and the frame is served all the same: the next write is tried a quarter lease on."""
        now = self.clock.time()
        if now - self._written.get(device_id, 0.0) >= self.lease_s / 4:
            self._written[device_id] = now
            with contextlib.suppress(RegistryFullError):
                self.registry.touch_device(device_id, now)

    def live_since(self) -> float:
        """Devices heard from after this moment (unix seconds) hold a lease."""
        return self.clock.time() - self.lease_s
