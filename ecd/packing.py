"""Several frames per message (ecd.v1 revision 3, ``FrameBatch``): how a sender fills one.

A small model costs less than the gRPC message that carries its frame (digits_cnn: ~0.2 ms of model
against ~1 ms of gRPC and event loop per message on every tier), so the device agent and the edge
node pack the frames they *have ready* into one message — the trade Kafka's ``linger.ms`` /
``batch.size`` and Nagle's algorithm make on the wire. Unlike them, a sender here never waits for a
frame that is not there: one frame alone goes out at once, so a frame in flight by itself costs what
it did before (no latency added when idle). Under load the frames queue up behind the message being
written, and the next message carries them all.

* ``linger_s`` bounds how long a sender spends gathering after the first frame of a message: the
  agent takes samples while its in-flight window allows, for at most this long, and runs its device
  blocks on them as one call, so the first frame never waits more than ``linger_s`` (plus that
  call) for its batch-mates; the edge node
  takes what is queued (no wait). ``0`` turns packing off: one frame per message, on the one-frame
  ``Stream`` call (which a revision-2 peer also serves).
* ``max_frames`` and ``max_bytes`` cap a message; a frame larger than ``max_bytes`` goes alone. A
  receiver's message limit (``ecd.limits.frame_receive_cap``: its ``max_tensor_bytes`` + 64 KiB) holds
  for the whole message, so ``max_bytes`` must stay under the receiver's ``max_tensor_bytes`` (the
  default 4 MiB is a quarter of the default); the edge node caps its own at its ``max_tensor_bytes``.

Per-frame identity, checks, errors and de-duplication stay per frame (the receivers treat a batch as
its frames in order); only the message is shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence, TypeVar

from ecd.config import MiB
from ecd.errors import ConfigError
from ecd.limits import MAX_FRAMES_PER_MESSAGE

T = TypeVar("T")

DEFAULT_LINGER_S = 0.002
DEFAULT_MAX_FRAMES = 16
DEFAULT_MAX_BYTES = 4 * MiB


@dataclass(frozen=True)
class Packing:
    linger_s: float = DEFAULT_LINGER_S  # what a sender may spend making a message's later frames
    max_frames: int = DEFAULT_MAX_FRAMES  # 1: one frame per message (the one-frame Stream call)
    max_bytes: int = DEFAULT_MAX_BYTES

    @property
    def on(self) -> bool:
        return self.max_frames > 1

    def check(self) -> Packing:
        """Refuse settings that cannot work, naming the option (``--linger-ms``, ``--message-*``)."""
        if not 0.0 <= self.linger_s <= 1.0:
            raise ConfigError(f"linger_ms: expected 0..1000, got {self.linger_s * 1e3:g}")
        if not 1 <= self.max_frames <= MAX_FRAMES_PER_MESSAGE:
            raise ConfigError(f"message_frames: expected 1..{MAX_FRAMES_PER_MESSAGE} (the most a receiver takes in one message), "
                              f"got {self.max_frames}")
        if self.max_bytes < 1:
            raise ConfigError(f"message_bytes: expected at least 1, got {self.max_bytes}")
        return self

    def room(self, frames: int, size: int, more: int) -> bool:
        """Whether a message holding ``frames`` frames of ``size`` bytes takes one more of ``more``."""
        return frames == 0 or (frames < self.max_frames and size + more <= self.max_bytes)

    def chunks(self, items: Sequence[T], size_of: Callable[[T], int]) -> Iterator[list[T]]:
        """``items`` in order, cut into messages at the caps (resent frames on a new stream)."""
        batch: list[T] = []
        size = 0
        for item in items:
            n = size_of(item)
            if not self.room(len(batch), size, n):
                yield batch
                batch, size = [], 0
            batch.append(item)
            size += n
        if batch:
            yield batch
