"""The frames a running stream has sent and not yet had answered (:mod:`device_agent.stream`):
what it resends after a failover, and what makes each answer reach the application once."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ecd.types import Frame, Result

__all__ = ["InFlight", "Sent"]


@dataclass(frozen=True)
class Sent:
    frame: Frame
    sent_at: float  # perf_counter when the frame was made, for its end-to-end latency
    label: int | None
    raw_bytes: int


class InFlight:
    """Frames sent and not yet answered, by frame id (one run's; the one writer of that fact)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: dict[int, Sent] = {}

    def add(self, sent: Sent) -> None:
        with self._lock:
            self._sent[sent.frame.frame_id] = sent

    def answer(self, result: Result) -> Sent | None:
        """The frame ``result`` answers, now answered; None if it was answered before, or never sent."""
        with self._lock:
            return self._sent.pop(result.frame_id, None)

    def unanswered(self) -> list[Frame]:
        """Every frame still waiting for its answer, oldest first (to resend on a new stream)."""
        with self._lock:
            return [self._sent[i].frame for i in sorted(self._sent)]

    def __len__(self) -> int:
        with self._lock:
            return len(self._sent)
