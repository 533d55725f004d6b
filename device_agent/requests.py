"""What other threads ask of a running stream — a move the cloud named, the user's new split, a
stop — as the stream loop reads them between two frames (:mod:`device_agent.stream`; the agent
answers them: ``device_agent.agent``)."""

from __future__ import annotations

import threading
from typing import Callable, Protocol

from device_agent.follow import AssignmentFollower
from device_agent.peers import EdgePeer
from device_agent.preferences import PreferenceControl

__all__ = ["AgentRequests", "Requests"]


class Requests(Protocol):
    """What the loop reads between two frames: the requests other threads made of it."""

    def stop_asked(self) -> bool: ...

    def wait_for_stop(self, timeout_s: float) -> bool: ...

    def move_pending(self) -> bool: ...

    def resplit_pending(self) -> bool: ...

    def wait_for_move(self, timeout_s: float) -> bool: ...

    def ask_cloud(self) -> None: ...

    def move(self) -> EdgePeer: ...

    def resplit(self) -> None: ...


class AgentRequests:
    """The agent's answers to them: its stop, the cloud's word on the assignment (``follow``), the
    user's pending preferences (``preferences``), and how it moves to another edge node."""

    def __init__(self, stop: threading.Event, follower: AssignmentFollower, preferences: PreferenceControl,
                 move: Callable[[], EdgePeer]) -> None:
        self._stop, self.follower, self.preferences, self._move = stop, follower, preferences, move

    def stop_asked(self) -> bool:
        return self._stop.is_set()

    def wait_for_stop(self, timeout_s: float) -> bool:
        return self._stop.wait(timeout_s)

    def move_pending(self) -> bool:
        return self.follower.pending_move is not None

    def resplit_pending(self) -> bool:
        return self.preferences.pending is not None

    def wait_for_move(self, timeout_s: float) -> bool:
        return self.follower.wait_for_move(timeout_s)

    def ask_cloud(self) -> None:
        self.follower.ask_cloud()

    def move(self) -> EdgePeer:
        return self._move()

    def resplit(self) -> None:
        self.preferences.apply_pending()
