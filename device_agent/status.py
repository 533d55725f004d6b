"""What a running agent shows the outside (the control panel, tests, an operator): one read-only
snapshot, so nothing outside the agent reads its working parts."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class AgentStatus:
    state: str  # device_agent.stream.StreamState's value: idle, streaming, draining, failing_over, ...
    why: str  # the reason of the last state change
    device_id: str
    edge_id: str
    edge_endpoint: str
    split: int  # the split frames are sent at now
    pending_split: int | None  # a re-split the user asked for, applied between two streams
    sent: int  # distinct frames sent (a resent frame counts once)
    answered: int
    errors: int
    in_flight: int  # sent and not yet answered
    duplicates_dropped: int  # answers dropped because their frame was already answered
    moves: int  # times the device followed its assignment to another edge node
    resplits: int  # times the user's new preferences moved the split of a running stream
    placement_version: int
    tasks_seen: int  # campaign tasks handed to this device
    tasks_done: int  # of them, answered with a frame
    preferences_error: str  # why the last preferences change was not applied ("" if it was)
    stop_asked: bool
    streaming: bool  # a run is under way (frames may be in flight)

    def to_dict(self) -> dict:
        return asdict(self)
