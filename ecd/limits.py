"""Limits on what one call may ask of a service, and rate limits per caller.

Every control call is bounded before it is parsed or stored: a name is short and printable (it is
logged and shown to operators: a newline in it would forge a log line), a profile is a few KiB of
TOML, a head has a bounded number of labels, a download's chunks have a minimum size. A caller that
registers faster than its rate gets ``RESOURCE_EXHAUSTED`` instead of growing the registry.
"""

from __future__ import annotations

import threading
import time
import unicodedata
from dataclasses import dataclass, field

from ecd.errors import LimitError, RequestError

MAX_NAME_CHARS = 64  # device, campaign and head names, labels
MAX_ENDPOINT_CHARS = 255  # host:port
MAX_PROFILE_BYTES = 16 * 1024  # a measured device profile's TOML
MAX_HEAD_LABELS = 1_000
MAX_HEADS_PER_MODEL = 16
MIN_CHUNK_BYTES = 4 * 1024  # FetchPartition's max_chunk_bytes (0 = the server's default)
MAX_FRAMES_PER_MESSAGE = 256  # frames in one FrameBatch (revision 3): a message of many empty frames must not make a receiver build millions
FRAME_HEADROOM_BYTES = 64 * 1024  # a frame's fields beside its tensor (ids, token, version, task), with room to spare


def frame_receive_cap(max_tensor_bytes: int) -> int:
    """The largest gRPC message a service takes in: the largest tensor it would accept in a frame
    (``max_tensor_bytes`` counts a tensor's float32 size, never less than its wire size) plus the
    frame's other fields. gRPC refuses anything bigger with RESOURCE_EXHAUSTED from its length
    prefix, before buffering it, and a compressed message once it inflates past it, so a member
    holding a valid token cannot make a service hold 8 x 60 MiB (issue 30: the edge reached 652 MB
    with the 64 MiB cap that sending partitions needs). Every control message is far smaller."""
    return max_tensor_bytes + FRAME_HEADROOM_BYTES


def printable(text: str, limit: int = MAX_NAME_CHARS) -> str:
    """``text`` safe to log: control and format characters escaped, at most ``limit`` characters."""
    out = "".join(c if unicodedata.category(c)[0] != "C" else repr(c)[1:-1] for c in text[: limit + 1])
    return out[:limit] + ("…" if len(text) > limit else "")


def check_name(name: str, field_name: str, limit: int = MAX_NAME_CHARS) -> str:
    """A name of 1..``limit`` characters with no control or format characters."""
    if not name:
        raise RequestError(f"{field_name}: must not be empty")
    if len(name) > limit:
        raise RequestError(f"{field_name}: at most {limit} characters, got {len(name)}")
    if any(unicodedata.category(c)[0] == "C" for c in name):
        raise RequestError(f"{field_name}: control characters are not allowed, got {printable(name)!r}")
    return name


def check_size(data: str | bytes, field_name: str, limit: int) -> None:
    size = len(data.encode() if isinstance(data, str) else data)
    if size > limit:
        raise LimitError(f"{field_name}: {size} bytes exceed the limit of {limit} bytes")


@dataclass
class RateLimiter:
    """A token bucket per caller: ``burst`` calls at once, then ``per_s`` a second. Idle callers
    are forgotten, so the table itself stays bounded by the callers of the last few minutes."""

    per_s: float
    burst: float
    what: str
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # caller -> (tokens, when)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not (self.per_s > 0 and self.burst >= 1):
            raise RequestError(f"{self.what}: a rate limit needs per_s > 0 and burst >= 1, got {self.per_s}, {self.burst}")

    def take(self, caller: str, now: float | None = None) -> None:
        """Spend one call of ``caller``'s budget, or raise :class:`~ecd.errors.LimitError`."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, then = self._buckets.get(caller, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.per_s)
            if tokens < 1:
                raise LimitError(f"{self.what}: more than {self.per_s:g} a second (burst {self.burst:g}) from "
                                 f"{printable(caller)}; retry later")
            self._buckets[caller] = (tokens - 1, now)
            if len(self._buckets) > 10_000:  # forget callers whose buckets are full again
                full = [k for k, (t, w) in self._buckets.items() if t + (now - w) * self.per_s >= self.burst]
                for k in full:
                    del self._buckets[k]


@dataclass
class RateLimits:
    """Calls a caller may make of the cloud per second (token buckets, :class:`RateLimiter`)."""

    registrations: RateLimiter = field(default_factory=lambda: RateLimiter(10.0, 50.0, "registrations"))
    locations: RateLimiter = field(default_factory=lambda: RateLimiter(20.0, 200.0, "ReportLocation"))
    watches: RateLimiter = field(default_factory=lambda: RateLimiter(5.0, 20.0, "WatchAssignment"))


def check_message_frames(count: int) -> None:
    """A FrameBatch's frame count, before any frame is read (``RESOURCE_EXHAUSTED`` naming ``frames``)."""
    if count > MAX_FRAMES_PER_MESSAGE:
        raise LimitError(f"frames: a message carries at most {MAX_FRAMES_PER_MESSAGE} frames, got {count}")
