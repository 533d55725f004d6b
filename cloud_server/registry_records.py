"""The registry's records: what its methods return, typed, and the device-token rules.

Kept apart from :mod:`cloud_server.registry` so that the scheduler-side modules that only read
records
need not know about storage (today they import them through :mod:`cloud_server.registry`). NamedTuples stand where callers unpack a row
like the tuple it used to be; frozen dataclasses where they read fields by name.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from cloud_server.campaigns import NEUTRAL_REPUTATION
from ecd.types import Split

REVOKED = "revoked"  # a stored token no presented token matches


def hash_token(token: str) -> str:
    """What the registry stores of a device token: its SHA-256 (tokens are 128 random bits, so a
    plain hash suffices; a stolen database gives no usable token)."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def token_matches(stored: str, presented: str) -> bool:
    """Constant-time comparison of a presented token with the stored hash (or, for a registry
    written before tokens were hashed, with the stored token)."""
    if stored == REVOKED:
        return False
    if stored.startswith("sha256:"):
        return hmac.compare_digest(stored, hash_token(presented))
    return hmac.compare_digest(stored.encode(), presented.encode())


@dataclass(frozen=True)
class DeviceRecord:
    device_id: str
    token: str
    name: str
    profile: str
    radio: str
    w_energy: float
    w_privacy: float
    min_split: int
    model_id: str
    model_version: str
    split_device: int
    split_edge: int
    encoding: str  # Encoding.value
    edge_id: str
    reputation: float = NEUTRAL_REPUTATION  # until a campaign scores the device (cloud_server.campaigns)
    lat: float | None = None  # the last reported position; None = unknown
    lon: float | None = None
    sensors: str = "{}"  # JSON: sensor -> benchmark score 0..10, as the device registered them
    holder: str = ""  # the device certificate it registered with ("" = plaintext): its token is good only over it

    @property
    def split(self) -> Split:
        return Split(self.split_device, self.split_edge)


@dataclass(frozen=True)
class EdgeRecord:
    edge_id: str
    endpoint: str
    capacity: float
    load: float
    queue_depth: int
    last_seen_unix: float
    lat: float | None = None  # None = no position registered
    lon: float | None = None
    activation_cost: float = 0.0  # 0 = the cloud's default
    owner: str = ""  # the edge certificate's name that registered the endpoint ("" = plaintext, unbound)


DEVICE_COLUMNS = tuple(DeviceRecord.__dataclass_fields__)
EDGE_COLUMNS = tuple(EdgeRecord.__dataclass_fields__)


class DeviceActivity(NamedTuple):
    """A device as the operator view shows it (unix seconds, 0 = never)."""
    record: DeviceRecord
    registered_unix: float
    last_seen_unix: float
    revoked_unix: float


class PendingTask(NamedTuple):
    campaign_id: str
    task_id: int
    cell: int
    slot: int


class TaskRow(NamedTuple):
    task_id: int
    device_id: str
    cell: int
    slot: int
    answered: bool
    reading: float | None
    label: str | None


class TracePoint(NamedTuple):
    """One position of a device's location trace (an :class:`ecd.types.Position`'s degrees, as a tuple)."""
    lat: float
    lon: float


class Answer(StrEnum):
    """What storing a task's result did (compares equal to its text: "new", "again", "not yours")."""
    NEW = "new"  # stored
    AGAIN = "again"  # this device had answered it already (a resent frame): the first answer stays
    NOT_YOURS = "not yours"  # the campaign has no such task for this device
