"""Following the cloud's word on this device's assignment: moves to another edge node, a newer
placement, and the campaign tasks handed to the device.

Words come from three places — the assignment watch (a server stream the cloud keeps open), the
reply to a location report, and an explicit question after a stream broke — and all go through
:meth:`AssignmentFollower.offer`. A move is only *noted* there (``pending_move``); the stream loop
carries it out between two frames (:mod:`device_agent.stream`), so no frame is ever made for an
edge that is being left.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from device_agent.core import AgentCore
from device_agent.peers import CloudPeer
from ecd.errors import EcdError, UnavailableError
from ecd.types import Assignment, Task

log = logging.getLogger("ecd.agent")


class AssignmentFollower:
    """The single writer of the pending move, the placement version seen and the task queue."""

    def __init__(self, core: AgentCore, cloud: CloudPeer) -> None:
        self.core = core
        self.cloud = cloud
        self._lock = threading.Lock()
        self._seen = threading.Condition(self._lock)
        self._moved = threading.Event()
        self._closing = threading.Event()
        self.pending_move: Assignment | None = None  # a new edge the cloud named, not yet switched to
        self.placement_version = 0
        self._tasks: deque[Task] = deque()  # campaign tasks handed out and not yet sent
        self.tasks_seen: set[Task] = set()
        self.tasks_done = 0
        self._watch = None
        self._watcher: threading.Thread | None = None

    def offer(self, a: Assignment) -> None:
        """Take the cloud's latest word: new tasks are queued, another edge becomes the pending
        move, a newer placement on the same edge is recorded."""
        with self._lock:
            for task in a.tasks:
                if task not in self.tasks_seen:
                    self.tasks_seen.add(task)
                    self._tasks.append(task)
            current = self.pending_move or self.core.assignment
            assert current is not None
            if a.edge_endpoint and (a.edge_endpoint, a.edge_id) != (current.edge_endpoint, current.edge_id):
                self.pending_move = a
            elif a.placement_version > current.placement_version:
                if self.pending_move is None:
                    self.core.placement_seen(a.placement_version)  # the same edge under a newer placement
                else:
                    self.pending_move = a
            self.placement_version = max(self.placement_version, a.placement_version)
            self._seen.notify_all()
            if self.pending_move is not None:
                self._moved.set()

    def take_move(self) -> Assignment | None:
        """The pending move, now taken (the stream loop is switching)."""
        with self._lock:
            a, self.pending_move = self.pending_move, None
            self._moved.clear()
            return a

    def wait_for_move(self, timeout_s: float) -> bool:
        return self._moved.wait(timeout_s)

    def next_task(self) -> Task | None:
        """The next campaign task to answer with a frame, if any (counted as done)."""
        with self._lock:
            if not self._tasks:
                return None
            self.tasks_done += 1
            return self._tasks.popleft()

    def wait_for_tasks(self, count: int, timeout_s: float = 30.0) -> bool:
        """Block until ``count`` campaign tasks (in all) reached this agent."""
        with self._lock:
            return self._seen.wait_for(lambda: len(self.tasks_seen) >= count, timeout_s)

    def wait_for_placement(self, version: int, timeout_s: float = 30.0) -> bool:
        """Block until the cloud's placement ``version`` (or a later one) reached this agent."""
        with self._lock:
            return self._seen.wait_for(lambda: self.placement_version >= version, timeout_s)

    def ask_cloud(self) -> None:
        """Ask the cloud where this device should stream now; its answer is taken like a watched one."""
        a = self.core.assignment
        assert a is not None
        try:
            self.offer(self.cloud.get_assignment(a.device_id, a.token))
        except EcdError as e:
            log.warning("[DeviceAgent] cannot ask the cloud for the assignment (%s)", e)

    # --- the watch ------------------------------------------------------------------------------

    def start_watch(self) -> None:
        self._watcher = threading.Thread(target=self._watch_loop, name="ecd-agent-watch", daemon=True)
        self._watcher.start()

    def _watch_loop(self) -> None:
        """Follow the watch; one the cloud drops (it restarted, the link broke) is opened again,
        with backoff, until :meth:`close`."""
        a = self.core.assignment
        assert a is not None
        backoff_s = 0.2
        while not self._closing.is_set():
            watch = self.cloud.watch_assignment(a.device_id, a.token)
            self._watch = watch
            if self._closing.is_set():  # closed while the call was being made
                watch.cancel()
            try:
                for msg in watch:
                    self.offer(msg)
                    backoff_s = 0.2
            except EcdError as e:
                if self._closing.is_set() or e.status == "CANCELLED":
                    return
                if not isinstance(e, UnavailableError):
                    log.warning("[DeviceAgent] assignment watch refused (%s)", e)
                    return
                log.warning("[DeviceAgent] assignment watch broke (UNAVAILABLE); again in %.1f s", backoff_s)
            if self._closing.wait(backoff_s):
                return
            backoff_s = min(backoff_s * 2, 5.0)

    def close(self) -> None:
        self._closing.set()
        if self._watch is not None:
            self._watch.cancel()
        if self._watcher is not None:
            self._watcher.join(10)
