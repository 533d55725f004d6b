"""The user's preferences changed while the device runs (the control panel): checked, decided,
told to the cloud, and — when the split moves under a running stream — applied between two streams.
The measured link asks for its re-splits through the same path (:meth:`PreferenceControl.request`,
from ``device_agent.adapt``), with the user's preferences unchanged.

A change that moves the split of a running stream is only *noted* here (``pending``): the stream
loop lets the frames in flight be answered at the old split, then calls :meth:`apply_pending`
with nothing in flight, so no frame is lost, resent or sent twice.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import Callable

from device_agent.core import AgentCore
from device_agent.peers import CloudPeer, PeerDown
from ecd import distribution
from ecd.errors import EcdError, PeerError, PreconditionError, RequestError
from ecd.split import Preferences, SplitDecision, decide_split
from ecd.types import PreferencesUpdate

log = logging.getLogger("ecd.agent")


@dataclasses.dataclass(frozen=True)
class PendingResplit:
    prefs: Preferences
    decision: SplitDecision
    split: int
    reason: str = "preferences"  # what split_changes names: preferences, bandwidth


class PreferenceControl:
    """The single writer of a pending re-split, the count of re-splits and the last refusal."""

    def __init__(self, core: AgentCore, cloud: CloudPeer, pinned_split: int, model_dir: Path, max_message_bytes: int,
                 streaming: Callable[[], bool]) -> None:
        self.core = core
        self.cloud = cloud
        self.pinned_split = pinned_split  # --split, or -1
        self.model_dir = model_dir
        self.max_message_bytes = max_message_bytes
        self.streaming = streaming
        self.lock = threading.Lock()  # one change at a time (the panel's threads)
        self.pending: PendingResplit | None = None
        self.resplits = 0  # times a re-split (preferences or the measured link) moved the split of a running stream
        self.error = ""  # why the last change was not applied (shown on the panel)
        self.fetched = 0  # blocks [0, fetched) are on disk (more than the partition runs, when prefetched)
        self.split_changes: list[dict] = []  # {"frame", "from", "to", "reason"}: frame = the first one sent at "to"

    def check(self, w_privacy: float | None = None, min_split: int | None = None) -> Preferences:
        """The preferences a user asks for, checked against this device: ``w_privacy`` in [0, 1]
        (``w_energy`` becomes 1 - w_privacy), ``min_split`` within the model's blocks, never below
        the current floor while a stream runs (a floor is a promise to the user: it is not lowered
        behind a running stream), never above a split pinned with ``--split``."""
        pending = self.pending
        current = pending.prefs if pending is not None else self.core.prefs  # a change not yet applied counts
        n = self.core.manifest.n_blocks if self.core.manifest else None
        if w_privacy is not None and (isinstance(w_privacy, bool) or not isinstance(w_privacy, (int, float))
                                      or not 0.0 <= w_privacy <= 1.0):  # NaN fails the comparison too
            raise RequestError(f"w_privacy: expected a number in [0, 1], got {w_privacy!r}")
        if min_split is not None:
            if isinstance(min_split, bool) or not isinstance(min_split, int) or min_split < 0 or (n is not None and min_split > n):
                raise RequestError(f"min_split: expected an integer in 0..{n} (the model's blocks), got {min_split!r}")
            if self.streaming() and min_split < current.min_split:
                raise PreconditionError(f"min_split: the floor can only be raised while the device streams (it is {current.min_split}, "
                                        f"asked {min_split}); stop the agent to lower it")
            if self.pinned_split >= 0 and min_split > self.pinned_split:
                raise PreconditionError(f"min_split: {min_split} is above the split pinned with --split ({self.pinned_split})")
        w = current.w_privacy if w_privacy is None else float(w_privacy)
        return dataclasses.replace(current, w_energy=1.0 - w, w_privacy=w,
                                   min_split=current.min_split if min_split is None else min_split)

    def decide(self, prefs: Preferences) -> tuple[SplitDecision, int]:
        """The utility's curve for ``prefs`` on this device, and the split it would send at (the
        recommended one, or the one pinned with ``--split``)."""
        family = self.core.family or self.core.manifest  # the manifest the user's decisions are made on
        assert family is not None
        if self.core.level is not None:  # a learned level is another model: the split moves within it
            prefs = dataclasses.replace(prefs, defence_strength=float(self.core.level))
        decision = decide_split(family, self.core.profile, self.core.radio, prefs)
        return decision, decision.recommended if self.pinned_split < 0 else self.pinned_split

    def change(self, w_privacy: float | None = None, min_split: int | None = None) -> int:
        """Take the user's new weight and floor; returns the split the device sends at from now on.
        A refusal by the cloud is a :class:`~ecd.errors.PeerError` naming it (nothing changes)."""
        with self.lock:
            prefs = self.check(w_privacy, min_split)
            decision, split = self.decide(prefs)
            assert self.core.assignment is not None
            if self.streaming() and (split != self.core.assignment.split.device or self.pending is not None):
                self.pending = PendingResplit(prefs, decision, split)  # the stream loop applies it between two streams
                return split
            try:
                self._apply(PendingResplit(prefs, decision, split))
            except (PeerError, PeerDown) as e:
                raise PeerError(e.status, f"cloud: {e}") from None
            return split

    def request(self, split: int, reason: str) -> bool:
        """Ask for ``split`` with the user's preferences unchanged (the measured link's re-split), applied
        between two streams like a preference change; False (nothing asked) while another change is
        pending, with ``--split`` pinned, or below the floor."""
        with self.lock:
            a = self.core.assignment
            if self.pending is not None or self.pinned_split >= 0 or a is None or self.core.decision is None:
                return False
            if split < self.core.prefs.min_split or split == a.split.device:
                return False
            self.pending = PendingResplit(self.core.prefs, self.core.decision, split, reason)
            return True

    def apply_pending(self) -> None:
        """Apply a pending split change (no frame in flight). If the cloud cannot be told, the device
        goes on at the old split and the panel says why."""
        with self.lock:
            pending, self.pending = self.pending, None
            if pending is None:
                return
            assert self.core.assignment is not None
            old = self.core.assignment.split.device
            try:
                self._apply(pending)
            except EcdError as e:
                self.error = str(e)
                log.warning("[DeviceAgent] preferences not applied (%s); staying at split %d", e, old)
                return
            self.resplits += self.core.assignment.split.device != old

    def _apply(self, change: PendingResplit) -> None:
        """Fetch blocks [0, split) if they are not here, tell the cloud, load the new partition."""
        manifest, a = self.core.manifest, self.core.assignment
        assert manifest is not None and a is not None and self.core.partition is not None
        if change.split > max(self.core.partition.stop, self.fetched):
            request = distribution.request(manifest.model_id, manifest.version, 0, change.split, self.max_message_bytes)
            manifest = self.cloud.fetch(request, self.model_dir / manifest.model_id)
            self.fetched = change.split
        old = a.split.device
        reply = self.cloud.update_preferences(PreferencesUpdate(a.device_id, a.token, change.prefs, change.split))
        self.core.preferences_applied(change.prefs, change.decision, manifest, dataclasses.replace(
            a, split=reply.split, recommended_split=reply.recommended_split, preferences=reply.preferences))
        self.error = ""
        if reply.split.device != old:
            self.split_changes.append({"frame": self.core.next_frame_id, "from": old, "to": reply.split.device, "reason": change.reason})
        log.info("[DeviceAgent] %s: w_privacy %.2f, min_split %d: split %d", a.device_id, change.prefs.w_privacy,
                 change.prefs.min_split, change.split)
