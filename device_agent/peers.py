"""What the agent needs from its two peers, as plain Python: the cloud (registration, assignment,
partitions) and the edge node it streams to.

The agent's logic (``stream``, ``follow``, ``preferences``) talks only to these protocols, in records
and :class:`~ecd.errors.EcdError` subclasses, so it runs in a test against an in-process fake edge
or cloud; ``device_agent.service`` implements them over gRPC, the one place that knows the wire.

A peer's refusal is a :class:`~ecd.errors.PeerError` whose status is the peer's and whose message
starts with it (``PERMISSION_DENIED: ...``); a peer out of reach or a stream that broke is a
:class:`PeerDown`, which the agent retries (another edge, backoff) instead of giving up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Protocol

from ecd.errors import UnavailableError
from ecd.manifest import Manifest
from ecd.types import Assignment, DeviceRegistration, Frame, LocationReport, PartitionRequest, PreferencesUpdate, Result


class PeerDown(UnavailableError):
    """The peer cannot be reached, or the stream to it broke (gRPC ``UNAVAILABLE``): worth retrying."""


class Watch(Protocol):
    """A server stream of this device's assignment; :meth:`cancel` ends it from another thread."""

    def __iter__(self) -> Iterator[Assignment]: ...

    def cancel(self) -> None: ...


class CloudPeer(Protocol):
    def wait_ready(self, timeout_s: float) -> None: ...

    def fetch(self, request: PartitionRequest, dest: Path) -> Manifest: ...

    def register(self, registration: DeviceRegistration) -> Assignment: ...

    def update_preferences(self, update: PreferencesUpdate) -> Assignment: ...

    def get_assignment(self, device_id: str, token: str) -> Assignment: ...

    def report_location(self, report: LocationReport) -> Assignment: ...

    def watch_assignment(self, device_id: str, token: str) -> Watch: ...

    def close(self) -> None: ...


class EdgePeer(Protocol):
    """One edge node. Each :meth:`stream` call is one stream: its first frame binds the stream
    (the stream header) and the link sends the others compact; results come back as they are
    answered, in any order; ending ``frames`` half-closes the stream, and the edge then answers
    what is in flight before the results end."""

    edge_id: str
    endpoint: str

    def stream(self, frames: Iterator[Frame]) -> Iterator[Result]: ...

    def abandon(self) -> None:
        """End the current stream from another thread: its results raise :class:`PeerDown` (the
        edge answers nothing: a gray failure)."""

    def probe(self) -> float:
        """Seconds a minimal call to the edge takes (its round trip; ``--adapt`` only)."""
        raise NotImplementedError

    def close(self) -> None: ...
