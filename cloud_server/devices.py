"""Devices as the cloud sees them: registration, their preferences and split, their token, where
they are, and the assignment the cloud tells each one.

:class:`Devices` is the one writer of a device's row apart from its edge (that is
:class:`~cloud_server.assignment.EdgeAssignment`'s) and its lease (:class:`~cloud_server.leases.Leases`'s).
Every request is checked here once, each refusal naming its field.
"""

from __future__ import annotations

import json
import logging
import secrets
import tomllib
from typing import Callable

from cloud_server import campaigns, sites
from cloud_server.assignment import EdgeAssignment, position_of
from cloud_server.leases import Leases
from cloud_server.registry import DeviceRecord, Registry, hash_token, token_matches
from cloud_server.served import ServedModel, ServedModels
from ecd.clock import SYSTEM_CLOCK, Clock
from ecd.errors import AuthenticationError, EcdError, LimitError, NotFoundError, PermissionDeniedError, RequestError
from ecd.limits import MAX_PROFILE_BYTES, check_name, check_size, printable
from ecd.profiles import DeviceProfile, device_from_dict, known_devices, known_radios, load_device, load_radio
from ecd.split import Preferences, check_split, decide_split
from ecd.types import Assignment, DeviceRegistration, Encoding, LocationReport, Position, PreferencesUpdate, Task

log = logging.getLogger("ecd.cloud")


def parse_profile(text: str) -> DeviceProfile:
    """A shipped profile name, or the TOML of a profile the device measured (``ecd profile``)."""
    if text in known_devices():
        return load_device(text)
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise RequestError(f"profile: neither a known profile ({', '.join(known_devices())}) nor profile TOML") from None
    try:
        return device_from_dict(d, "in the request")
    except EcdError as e:  # every refusal names its field (found by benchmarks/fuzz_atheris.py)
        raise RequestError(f"profile: {e}") from None


class Devices:
    def __init__(self, registry: Registry, models: ServedModels, leases: Leases, assignment: EdgeAssignment,
                 placement_version: Callable[[], int], edge_boundary: int | None = None,
                 on_change: Callable[[], None] = lambda: None, clock: Clock = SYSTEM_CLOCK):
        self.registry = registry
        self.models = models
        self.leases = leases
        self.assignment = assignment
        self.placement_version = placement_version
        self.edge_boundary = edge_boundary  # blocks the edge runs up to by default (None: all but the last)
        self.on_change = on_change  # the transport wakes the assignment watchers
        self.clock = clock
        self.per_certificate = 4  # live devices one device certificate may hold (cfg.devices_per_certificate)

    def authenticate(self, device_id: str, token: str, holder: str | None = None) -> DeviceRecord:
        """The device whose token this is (its lease renewed), or AuthenticationError. ``holder``:
        the device certificate presenting it (None: no device certificate, e.g. relayed by an edge
        node); a token issued over a certificate is good only over that one."""
        record = self.registry.device(device_id) if device_id else None
        if record is None or not token or not token_matches(record.token, token):
            raise AuthenticationError(f"token: unknown device token for device_id {printable(device_id)!r}")
        if holder is not None and record.holder and holder != record.holder:
            raise AuthenticationError(f"token: device {device_id}'s token was issued to another device certificate")
        self.leases.renew(device_id)
        return record

    def split_edge(self, served: ServedModel, split_device: int) -> int:
        n = served.manifest.n_blocks
        boundary = n - 1 if self.edge_boundary is None else min(self.edge_boundary, n)
        return max(split_device, boundary)

    def decide(self, served: ServedModel, profile: DeviceProfile, radio: str, prefs: Preferences) -> int:
        """The split the ECD utility recommends for this device (the device may run another)."""
        return decide_split(served.manifest, profile, load_radio(radio), prefs).recommended

    def assignment_of(self, d: DeviceRecord, recommended: int, token: str) -> Assignment:
        """The device's assignment, carrying ``token``: the one the device presented (the registry
        keeps only its hash)."""
        edge = self.registry.edge(d.edge_id)
        return Assignment(
            device_id=d.device_id,
            token=token,
            edge_endpoint=edge.endpoint if edge else "",
            model_id=d.model_id,
            model_version=d.model_version,
            split=d.split,
            recommended_split=recommended,
            preferences=Preferences(d.w_energy, d.w_privacy, d.min_split),
            edge_id=d.edge_id if edge else "",
            placement_version=self.placement_version(),
            tasks=[Task(*t) for t in self.registry.pending_tasks(d.device_id)],
            encoding=Encoding(d.encoding) if d.encoding in Encoding._value2member_map_ else Encoding.FLOAT32,
        )

    def register(self, req: DeviceRegistration, holder: str = "", admit: Callable[[], None] = lambda: None) -> Assignment:
        """A new device; ``holder``: the device certificate it registers with ("" in plaintext),
        refused when a device registered with it was revoked (revocation sticks). A registration
        without ``split_device`` (None) runs the split the utility recommends. ``admit`` is the
        caller's last check, once the request is found good (an enrolment code is used up there)."""
        if holder and self.registry.holder_revoked(holder):
            raise PermissionDeniedError(f"device certificate {holder!r} was revoked: it cannot register again; "
                                        "issue the device a new certificate (ecd certs)")
        if holder:  # one certificate, a stated quota of devices: a stolen certificate cannot grow the fleet
            held = sum(1 for d in self.registry.devices(self.leases.live_since()) if d.holder == holder)
            if held >= self.per_certificate:
                raise LimitError(f"holder: device certificate {holder!r} already holds {held} live devices (at most "
                                 f"{self.per_certificate}); an agent that restarts keeps its device with --state")
        check_size(req.profile, "profile", MAX_PROFILE_BYTES)
        served = self.models.served(req.model_id)
        if req.radio not in known_radios():
            raise RequestError(f"radio: {printable(req.radio)!r} is not one of {', '.join(known_radios())}")
        profile = parse_profile(req.profile)
        prefs = req.preferences
        if prefs.min_split > served.manifest.n_blocks:
            raise RequestError(f"preferences.min_split: expected 0..{served.manifest.n_blocks}, got {prefs.min_split}")
        recommended = self.decide(served, profile, req.radio, prefs)
        split_device = recommended if req.split_device is None else req.split_device
        check_split(served.manifest, split_device, prefs.min_split)
        if not isinstance(req.encoding, Encoding):
            raise RequestError(f"encoding: expected FLOAT32, FLOAT16 or INT8_AFFINE, got {req.encoding}")
        position = req.position.check("position") if req.position is not None else None
        sensors = sites.check_sensors(req.sensors)
        admit()
        token = secrets.token_hex(16)
        record = self.assignment.admit(
            position,
            token=hash_token(token),
            name=check_name(req.device_name or "device", "device_name"),
            profile=req.profile if req.profile in known_devices() else "measured:" + profile.name,
            radio=req.radio,
            w_energy=prefs.w_energy,
            w_privacy=prefs.w_privacy,
            min_split=prefs.min_split,
            model_id=served.manifest.model_id,
            model_version=served.manifest.version,
            split_device=split_device,
            split_edge=self.split_edge(served, split_device),
            encoding=req.encoding.value,
            reputation=campaigns.NEUTRAL_REPUTATION,
            lat=position.lat if position else None,
            lon=position.lon if position else None,
            sensors=json.dumps(sensors),
            holder=holder,
        )
        if position is not None:
            self.registry.record_location(record.device_id, position.lat, position.lon, int(self.clock.time() * 1000))
        log.info("[CloudServer.RegisterDevice] %s (%s) split %d on edge %s", record.device_id, record.name, record.split_device, record.edge_id)
        return self.assignment_of(record, recommended, token)

    def update_preferences(self, req: PreferencesUpdate, holder: str | None = None, edge_owner: str | None = None) -> Assignment:
        """New weights and split. ``edge_owner``: the asker is the edge node holding that
        certificate, relaying a browser device's (whose key it checked) — only for a device assigned to it."""
        d = self.authenticate(req.device_id, req.token, holder)
        if edge_owner is not None and not self.assignment.serves(d, edge_owner):
            raise PermissionDeniedError(f"device_id: device {req.device_id} is not assigned to this edge node")
        served = self.models.served(d.model_id)
        prefs = req.preferences
        check_split(served.manifest, req.split_device, prefs.min_split)
        d = self.registry.update_device(
            d.device_id,
            w_energy=prefs.w_energy,
            w_privacy=prefs.w_privacy,
            min_split=prefs.min_split,
            split_device=req.split_device,
            split_edge=self.split_edge(served, req.split_device),
        )
        profile = load_device(d.profile) if d.profile in known_devices() else None
        recommended = self.decide(served, profile, d.radio, prefs) if profile else d.split_device
        return self.assignment_of(d, recommended, req.token)

    def get_assignment(self, device_id: str, token: str, edge_owner: str | None = None, holder: str | None = None) -> Assignment:
        """The device's assignment. Not a pure read: a device whose edge node was lost while it was
        away is moved to a live one first (never told to stream to a dead edge). ``edge_owner``: the
        asker is the edge node holding that certificate, checking a token it was shown — only for a
        device assigned to it."""
        d = self.authenticate(device_id, token, holder)
        alive = {e.edge_id for e in self.assignment.edges.alive()}
        if alive and d.edge_id not in alive:
            d = self._relocate(d, position_of(d))
        if edge_owner is not None and not self.assignment.serves(d, edge_owner):
            raise PermissionDeniedError(f"device_id: device {device_id} is not assigned to this edge node")
        return self.assignment_of(d, d.split_device, token)

    def report_location(self, req: LocationReport, holder: str | None = None) -> Assignment:
        """A device's new position: stored in its trace; if another active edge is now cheaper, the
        device moves there (its watchers are told)."""
        d = self.authenticate(req.device_id, req.token, holder)
        if req.position is None:
            raise RequestError("position: required")
        position = req.position.check("position")
        if req.unix_ms < 0:
            raise RequestError(f"unix_ms: expected >= 0, got {req.unix_ms}")
        self.registry.record_location(d.device_id, position.lat, position.lon, req.unix_ms or int(self.clock.time() * 1000))
        if self.assignment.edges.alive():
            d = self._relocate(d, position)
        return self.assignment_of(d, d.split_device, req.token)

    def _relocate(self, d: DeviceRecord, position: Position | None) -> DeviceRecord:
        moved = self.assignment.relocate(d, position)
        if moved.edge_id != d.edge_id:
            self.on_change()
        return moved

    def revoke(self, device_id: str) -> None:
        """Revoke a device's token (a stolen phone): the cloud refuses it at once, edge nodes from
        their next heartbeat on."""
        if not self.registry.revoke_device(device_id):
            raise NotFoundError(f"device_id: {printable(device_id)!r} is not registered")
        log.warning("[CloudServer.RevokeDevice] %s revoked", device_id)
